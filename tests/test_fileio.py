"""fileio: the benchmarks' JSON line is printed and saved identically."""
import json
import os

from spin_jax import fileio


def test_print_json_line_prints_and_saves_the_same_line(tmp_path, capsys):
  path = tmp_path / 'out.json'
  path.write_text('old\n')
  fileio.print_json_line({'a': 1.5, 'b': [1, 2], 'load_avg': [0.5],
                          'cpu_model': 'x'}, str(path))
  printed = capsys.readouterr().out
  assert printed == path.read_text() == (
      '{"a": 1.5, "b": [1, 2], "load_avg": [0.5], "cpu_model": "x"}\n')
  # Without its own, a result gets the machine's load average (1, 5, 15 min).
  fileio.print_json_line({'a': 1.5}, str(path))
  printed = capsys.readouterr().out
  got = json.loads(printed)
  assert printed == path.read_text() and got['a'] == 1.5
  assert len(got['load_avg']) == 3 and all(x >= 0 for x in got['load_avg'])
  # ... and the CPU's model and vector extensions, as /proc/cpuinfo has them.
  assert got['cpu_model'] == fileio.cpu_info().get('cpu_model')
  assert got['cpu_count'] == os.cpu_count()
  if os.path.exists('/proc/cpuinfo'):
    flags = open('/proc/cpuinfo').read()
    assert ('avx2' in got['cpu_vector_extensions']) == (' avx2' in flags)
  assert [p.name for p in tmp_path.iterdir()] == ['out.json']  # no temp file left


def test_print_json_line_without_path_writes_nothing(tmp_path, capsys):
  fileio.print_json_line([3], None)
  assert capsys.readouterr().out == '[3]\n'
  assert not list(tmp_path.iterdir())
