"""The Colab notebooks run end to end with small settings (so they never rot).

SPIN_JAX_NOTEBOOK_SMALL=1 makes each notebook use a tiny model, the
low-resolution body model and a few iterations; outputs are not kept.
"""
import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'experiments', 'notebooks')
NOTEBOOKS = ('smplify.ipynb', 'demo.ipynb', 'train.ipynb')


@pytest.mark.slow
@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs_with_small_settings(name, monkeypatch, tmp_path):
  monkeypatch.setenv('SPIN_JAX_NOTEBOOK_SMALL', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  monkeypatch.setenv('SPIN_JAX_NOTEBOOK_WORKDIR', str(tmp_path / 'work'))
  nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name='python3',
      resources={'metadata': {'path': NOTEBOOK_DIR}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == 'code'
            for o in c.get('outputs', []) if o.get('output_type') == 'error']
  assert not errors
