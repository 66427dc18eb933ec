"""Fault injection at the command line: every bad input gets one clear line.

Each case runs an entry point as a user would (a subprocess) and checks the
exit code (2 for bad input), that stderr is ONE line starting `error:` that
names the file or flag, that there is no traceback, and that nothing was
written. Cases run two at a time.
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from spin_jax import crops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET_IMAGE = os.path.join(REPO, 'spin_jax', 'assets', 'demo.png')


def run(args, cwd, timeout=300, env=None):
  full_env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  full_env.update(env or {})
  return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, env=full_env)


def assert_one_line_error(res, *needles, code=2):
  err = [l for l in res.stderr.splitlines() if l.strip()]
  assert res.returncode == code, (res.returncode, res.stderr[-3000:])
  assert 'Traceback' not in res.stderr, res.stderr[-3000:]
  assert len(err) == 1 and err[0].startswith('error: '), res.stderr[-3000:]
  for n in needles:
    assert n in err[0], (n, err[0])


def script(name):
  return os.path.join(REPO, 'experiments', name)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp('bad')
  with open(ASSET_IMAGE, 'rb') as f:
    png = f.read()
  image = crops.read_image(ASSET_IMAGE)
  import cv2
  ok, jpg = cv2.imencode('.jpg', image[..., ::-1])
  assert ok
  (d / 'truncated.jpg').write_bytes(jpg.tobytes()[:len(jpg) // 2])
  cv2.imwrite(str(d / 'one_pixel.png'), np.zeros((1, 1, 3), np.uint8))
  (d / 'garbage.pkl').write_bytes(b'not a pickle at all')
  (d / 'image.png').write_bytes(png)
  kp = np.zeros((1, 49, 3), np.float32)
  kp[0, 25:37] = [[60 + 5 * j, 100 + 10 * j, 0.9] for j in range(12)]
  nan_kp = kp.copy()
  nan_kp[0, 27:29, :2] = np.nan  # two confident joints
  np.save(d / 'nan.npy', nan_kp)
  far = kp.copy()
  far[0, 30, 0] = 1e30
  np.save(d / 'far.npy', far)
  np.save(d / 'wrong_shape.npy', np.zeros((10, 3), np.float32))
  op = np.zeros((25, 3))
  op[:8] = [[50 + 4 * j, 60 + 12 * j, 0.9] for j in range(8)]
  op[2:4, :2] = np.nan
  (d / 'nan_openpose.json').write_text(json.dumps(
      {'people': [{'pose_keypoints_2d': np.nan_to_num(op, nan=-1).ravel().tolist()}]})
      .replace('-1.0', 'NaN'))
  (d / 'not_a_checkpoint').mkdir()
  from spin_jax import convert, models  # a tiny regressor for the box cases
  convert.save_converted(str(d / 'converted'), models.create_model(
      models.ModelConfig(backbone='resnet18', img_res=32, hidden_dim=32)),
      source='test')
  np.savez(d / 'no_labels.npz', imgname=np.array(['a.jpg']),
           center=np.zeros((1, 2)), scale=np.ones(1))
  return d


def cases(d):
  """(name, argv, needles in the error line, output folder that must stay empty)."""
  out = str(d / 'out_{}')
  img = str(d / 'image.png')
  return [
      ('missing image', [script('demo.py'), '--img', str(d / 'nope.jpg'),
                         '--out', out], ['nope.jpg']),
      ('truncated jpeg', [script('fit.py'), '--keypoints', str(d / 'far.npy'),
                          '--img', str(d / 'truncated.jpg'), '--out', out],
       ['truncated.jpg', 'not a complete image']),
      ('1x1 image', [script('fit.py'), '--keypoints', str(d / 'far.npy'),
                     '--img', str(d / 'one_pixel.png'), '--out', out],
       ['one_pixel.png', '1x1']),
      ('NaN keypoints', [script('fit.py'), '--keypoints', str(d / 'nan.npy'),
                         '--out', out, '--body_model', 'default-low'],
       ['nan.npy', 'non-finite']),
      ('keypoint at 1e30', [script('fit.py'), '--keypoints', str(d / 'far.npy'),
                            '--out', out, '--body_model', 'default-low'],
       ['far.npy', 'must lie within']),
      ('wrong keypoint shape', [script('fit.py'), '--keypoints',
                                str(d / 'wrong_shape.npy'), '--out', out],
       ['wrong_shape.npy']),
      ('unreadable SMPL file', [script('fit.py'), '--keypoints',
                                str(d / 'wrong_shape.npy'), '--out', out,
                                '--body_model', str(d / 'garbage.pkl')],
       ['wrong_shape.npy']),
      ('body model typo', [script('render_body.py'), '--model', 'defualt',
                           '--out', str(d / 'out_typo' / 'x.png')],
       ["'defualt'", "did you mean 'default'"]),
      ('missing flagfile', [script('train.py'), '--flagfile', str(d / 'nope.flags'),
                            '--workdir', out], ['nope.flags']),
      ('unknown flag', [script('eval.py'), '--checkpoint', str(d), '--nonsense=1'],
       ['nonsense']),
      ('not a checkpoint', [script('eval.py'), '--checkpoint',
                            str(d / 'not_a_checkpoint'), '--dataset', 'synthetic'],
       ['not_a_checkpoint']),
      ('export of not a checkpoint', [script('export.py'), '--checkpoint',
                                      str(d / 'not_a_checkpoint'), '--out',
                                      str(d / 'out_export' / 'm.jaxexport')],
       ['not_a_checkpoint']),
      ('batch size 0', [script('train.py'),
                        '--config=' + os.path.join(REPO, 'experiments', 'configs',
                                                   'default.py') + ':tiny',
                        '--config.batch_size=0', '--workdir', out],
       ['--config.batch_size=0']),
      ('unknown layers form', [script('train.py'),
                               '--config=' + os.path.join(
                                   REPO, 'experiments', 'configs',
                                   'default.py') + ':tiny',
                               '--config.model.layers=quick', '--workdir', out],
       ["--config.model.layers='quick'", "'auto', 'fast', 'native'"]),
      ('misspelt config field', [script('train.py'),
                                 '--config.num_train_step=40', '--workdir', out],
       ["no field 'num_train_step'", 'Did you mean "num_train_steps"']),
      ('missing manual_dir', [os.path.join(REPO, 'data_prep', 'build.py'),
                              '--dataset', 'lsp', '--manual_dir', str(d / 'nope'),
                              '--data_dir', out], ['--manual_dir', 'nope']),
      ('npz without labels', [os.path.join(REPO, 'data_prep', 'build.py'),
                              '--dataset', 'lsp', '--from_spin_npz',
                              str(d / 'no_labels.npz'), '--image_dir', str(d),
                              '--data_dir', out], ['no_labels.npz', 'no labels']),
      ('box outside the image', [script('demo.py'), '--img', img, '--checkpoint',
                                 str(d / 'converted'), '--bbox=5000,5000,100,200',
                                 '--out', out], ['--bbox', 'outside']),
      ('NaN box', [script('demo.py'), '--img', img, '--checkpoint',
                   str(d / 'converted'), '--bbox=nan,10,100,200', '--out', out],
       ['--bbox', 'finite']),
      ('NaN OpenPose keypoints', [script('demo.py'), '--img', img, '--openpose',
                                  str(d / 'nan_openpose.json'), '--out', out],
       ['nan_openpose.json', 'non-finite']),
      ('demo on a truncated jpeg', [script('demo.py'), '--img',
                                    str(d / 'truncated.jpg'), '--out', out],
       ['truncated.jpg', 'not a complete image']),
  ]


def test_cli_bad_inputs_one_line_each(files):
  todo = cases(files)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(
        lambda c: run([a.format(c[0].replace(' ', '_')) for a in c[1]], files),
        todo))
  failed = []
  for (name, args, needles), res in zip(todo, results):
    try:
      assert_one_line_error(res, *needles)
      out = files / f'out_{name.replace(" ", "_")}'
      assert not out.exists() or not any(out.rglob('*.*')), list(out.rglob('*'))
    except AssertionError as e:
      failed.append(f'case {name!r}: {e}')
  assert not failed, '\n'.join(failed)


def test_verbose_shows_the_traceback(files):
  res = run([script('demo.py'), '--img', str(files / 'nope.jpg'), '--checkpoint',
             str(files), '--out', str(files / 'o'), '--verbose'], files)
  assert res.returncode == 2 and 'Traceback' in res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith('error: ')


def test_full_disk_during_a_checkpoint_save(tmp_path):
  """A save that fails (here: the file-size limit, EFBIG, as a full disk's
  ENOSPC) is reported once; the previous checkpoint stays readable."""
  code = textwrap.dedent(f"""
      import resource, sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      import _train_testlib as tl
      from spin_jax import cli, train

      def main(argv):
        cfg, bm, prior = tl.tiny_setup(num_train_steps=4, checkpoint_every=2)
        cfg.eval_every = 2
        cfg.data.eval_split = ''  # no validation data to build
        def fill_the_disk(step, state, body_model):
          if step == 2:  # after step 2's checkpoint: no file may grow now
            resource.setrlimit(resource.RLIMIT_FSIZE, (512, resource.RLIM_INFINITY))
        train.train_and_evaluate(cfg, {str(tmp_path / 'wd')!r}, body_model=bm,
                                 prior=prior, train_data=tl.make_data(cfg, bm),
                                 eval_hooks=(fill_the_disk,))
      cli.run(main)
      """)
  res = run(['-c', code], str(tmp_path))
  assert_one_line_error(res, 'could not save step 4', 'previous checkpoint (step 2)')
  from spin_jax import checkpoint as ckpt_lib
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / 'wd'), read_only=True)
  assert ckpt.latest_step() == 2
  assert ckpt.restore_config()['num_train_steps'] == 4
