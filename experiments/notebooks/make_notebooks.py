"""Writes the Colab notebooks of experiments/notebooks/ (run after editing).

  python experiments/notebooks/make_notebooks.py

Each notebook starts with the same set-up cell: inside a checkout (CI, local
Jupyter) it uses the checkout; elsewhere (Colab) it clones the repository and
installs it. SPIN_JAX_NOTEBOOK_SMALL=1 selects seconds-long settings (CI runs
them that way through tests/test_notebooks.py).
"""
import os

import nbformat
from nbformat import v4

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_URL = 'https://github.com/spin-jax/spin_jax'

SETUP = f'''\
# Set-up: use this checkout if we are inside one, otherwise (Colab) clone and
# install spin_jax. Runs in seconds when already installed.
import os, subprocess, sys

REPO_URL = os.environ.get('SPIN_JAX_REPO', {REPO_URL!r})

def find_checkout(start='.'):
  path = os.path.abspath(start)
  while path != os.path.dirname(path):
    if os.path.isfile(os.path.join(path, 'spin_jax', '__init__.py')):
      return path
    path = os.path.dirname(path)
  return None

ROOT = find_checkout()
if ROOT is None:
  subprocess.run(['git', 'clone', '--depth', '1', REPO_URL, 'spin_jax'], check=True)
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', 'spin_jax[dev]'],
                 check=True)
  ROOT = os.path.abspath('spin_jax')
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Small settings (CI): SPIN_JAX_NOTEBOOK_SMALL=1.
SMALL = os.environ.get('SPIN_JAX_NOTEBOOK_SMALL') == '1'
print('spin_jax checkout:', ROOT, '| small settings:', SMALL)
'''

CONFIG_HELPER = '''\
import ml_collections
from experiments.configs import default as default_config

def quickstart_config(small):
  """The quickstart configuration (experiments/flagfiles/quickstart.flags), or
  the seconds-long test setting when small."""
  config = default_config.get_config('tiny' if small else '')
  flagfile = os.path.join(ROOT, 'experiments', 'flagfiles', 'quickstart.flags')
  if small or not os.path.isfile(flagfile):
    return config
  for line in open(flagfile):
    line = line.strip()
    if not line.startswith('--config.'):
      continue
    key, value = line[len('--config.'):].split('=', 1)
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    old = node[leaf]
    if isinstance(old, bool):
      node[leaf] = value.lower() in ('1', 'true')
    elif old is None or isinstance(old, str):
      node[leaf] = value
    else:
      node[leaf] = type(old)(value)
  return config
'''


def nb(cells):
  out = v4.new_notebook()
  out.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3',
                                'language': 'python'}
  out.metadata['language_info'] = {'name': 'python'}
  out.metadata['colab'] = {'provenance': []}
  out.cells = [v4.new_markdown_cell(c[3:]) if c.startswith('md:') else
               v4.new_code_cell(c) for c in cells]
  return out


def badge(name):
  return (f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
          f'({REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/")}'
          f'/blob/main/experiments/notebooks/{name})')


DEMO = nb([
    'md:# spin_jax: 3D body from one image\n\n' + badge('demo.ipynb') + '\n\n'
    'Regresses SMPL-format body parameters from an image with the HMR regressor '
    'that SPIN trains, then renders the mesh over the image and from the side. '
    'Without a checkpoint it first trains the quickstart model on the embedded '
    'synthetic data (a few minutes on a CPU). To use SPIN\'s released weights, '
    'convert them with `experiments/convert_checkpoint.py` and set `CHECKPOINT`.',
    SETUP,
    '''\
import numpy as np
from IPython.display import Image, display
from spin_jax import crops, inference

WORKDIR = os.environ.get('SPIN_JAX_NOTEBOOK_WORKDIR') or os.path.join(ROOT, 'runs', 'notebook_demo')
CHECKPOINT = os.environ.get('SPIN_JAX_CHECKPOINT', '')  # a workdir or converted SPIN dir
IMAGE = os.path.join(ROOT, 'spin_jax', 'assets', 'demo.png')
BBOX = None  # e.g. '40,20,160,300' (x, y, w, h); None: the whole image''',
    'md:## A regressor\n\nTrain the quickstart (skipped when `CHECKPOINT` is set). '
    'With small settings the network is an untrained tiny one: the pictures are '
    'then meaningless, but every step runs.',
    CONFIG_HELPER + '''
if CHECKPOINT:
  loaded = inference.load_model(CHECKPOINT)
  model, body_model = loaded.model, loaded.body_model
elif SMALL:
  from spin_jax import models, smpl_io
  config = quickstart_config(small=True)
  model = models.create_model(models.ModelConfig.create(config.model))
  body_model = smpl_io.resolve_body_model(config.body_model)
else:
  from spin_jax import train
  metrics = train.train_and_evaluate(quickstart_config(small=False), WORKDIR)
  print({k: round(float(v), 2) for k, v in metrics.items() if k.startswith('eval/')})
  loaded = inference.load_model(WORKDIR)
  model, body_model = loaded.model, loaded.body_model''',
    'md:## Run on the image',
    '''\
image = crops.read_image(IMAGE)
boxes = (crops.parse_bbox_flag(BBOX) if BBOX
         else [crops.whole_image_box(image.shape)])
predictor = inference.Predictor(model, body_model)
out = inference.run_on_image(predictor, image, boxes, os.path.join(WORKDIR, 'demo'), 'demo')
print('camera translation in the full image (m):', out['cam_t'].round(3))
print('focal length in the full image (px):', out['focal_length'].round(1))
for path in out['files']:
  if path.endswith('.png'):
    display(Image(filename=path))''',
    'md:The parameters (pose, betas, cameras) are in `demo_params.npz` and each '
    'mesh in `demo_person0.obj`, in the full image\'s camera frame.',
])


SMPLIFY = nb([
    'md:# SMPLify on 2D keypoints\n\n' + badge('smplify.ipynb') + '\n\n'
    'Fits the body model to 2D keypoints, as SPIN does inside its training loop: '
    'first the camera and global orientation on the torso, then pose and shape '
    'with the robust reprojection term and the pose, angle and shape priors. '
    'The keypoints here are projections of a known body, so we can also measure '
    'the 3D error of the fit.',
    SETUP,
    '''\
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from spin_jax import camera, constants, evaluate, metrics, models, priors, rotations, smpl, smpl_io, smplify

body = smpl_io.default_body_model('low' if SMALL else 'full')
prior = priors.default_pose_prior()
# Ground truth: a person as the synthetic dataset samples them (pose from the
# GMM pose prior, mostly frontal, betas ~ N(0, 1)), 2f/(224 * 0.9) metres away.
from spin_jax.datasets import scenes
pose, betas = scenes.sample_bodies(np.random.default_rng(1), 1)
gt = dict(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=betas)
cam_t = np.array([[0.05, 0.1, 2 * constants.FOCAL_LENGTH / (constants.IMG_RES * 0.9)]], np.float32)
gt_joints = smpl.joints_forward(body, gt['betas'], gt['body_pose'], gt['global_orient'])
kp = camera.perspective_projection(gt_joints, cam_t, constants.FOCAL_LENGTH,
                                   jnp.array([112.0, 112.0]))
conf = np.zeros((1, 49, 1), np.float32)
conf[:, 25:] = 1.0  # the 24 ground-truth joints, as in SPIN's training data
keypoints = jnp.concatenate([kp, conf], -1)  # (1, 49, 3) pixels of the 224 crop
print('keypoints inside the crop:', bool(jnp.all((kp > 0) & (kp < 224))))''',
    'md:## Initialise from the mean parameters and run\n\n'
    'With `return_history=True` SMPLify also returns each stage\'s objective at '
    'its start and after every iteration: the loss curve.',
    '''\
mean = models.load_mean_params()
mean_rot = rotations.rot6d_to_matrix(jnp.asarray(mean['pose6d']).reshape(24, 6))
mean_aa = rotations.matrix_to_axis_angle(mean_rot).reshape(1, 72)
init = smplify.FitParams(
    global_orient=mean_aa[:, :3], body_pose=mean_aa[:, 3:],
    betas=jnp.asarray(mean['betas'])[None],
    camera_translation=camera.weak_perspective_to_translation(jnp.asarray(mean['cam'])[None]))

iters = dict(camera_iterations=10, body_iterations=15) if SMALL else {}  # SPIN: 100 + 100
cfg = smplify.SMPLifyConfig(mode='faithful', return_history=True, **iters)
res = smplify.smplify(body, prior, init, keypoints, cfg)
print('objective: camera stage', float(res.history['camera'][0, 0]), '->',
      float(res.history['camera'][0, -1]), '; body stage', float(res.history['body'][0, 0]),
      '->', float(res.history['body'][0, -1]))

fig, ax = plt.subplots(1, 2, figsize=(8, 3))
for a, stage in zip(ax, ('camera', 'body')):
  a.plot(np.asarray(res.history[stage][0]))
  a.set_xlabel(f'{stage}-stage iterations'); a.set_yscale('log'); a.grid(True, alpha=0.3)
ax[0].set_ylabel('SMPLify objective')
plt.show()''',
    'md:## How close is the fit in 3D?',
    '''\
fit = res.params
fit_verts = smpl.forward(body, fit.betas, fit.body_pose, fit.global_orient).vertices
gt_verts = smpl.forward(body, gt['betas'], gt['body_pose'], gt['global_orient']).vertices
def j14(v):
  j = evaluate.h36m_regressed(body, v)
  return j[:, list(constants.H36M_TO_J14)] - j[:, :1]
m = metrics.pose_metrics(j14(fit_verts), j14(gt_verts))
print(f"fit vs ground truth: MPJPE {m['mpjpe'][0]:.1f} mm, PA-MPJPE {m['pa_mpjpe'][0]:.1f} mm")
init_verts = smpl.forward(body, init.betas, init.body_pose, init.global_orient).vertices
m0 = metrics.pose_metrics(j14(init_verts), j14(gt_verts))
print(f"mean pose vs ground truth: MPJPE {m0['mpjpe'][0]:.1f} mm, PA-MPJPE {m0['pa_mpjpe'][0]:.1f} mm")''',
    '''\
from spin_jax import render
c = (112.0, 112.0)
panel = lambda v, t, col: render.render_mesh(np.asarray(v[0]), body.faces, constants.FOCAL_LENGTH, c,
                                             (224, 224), translation=np.asarray(t[0]), color=col)
fig, ax = plt.subplots(1, 2, figsize=(6, 3))
ax[0].imshow(panel(gt_verts, cam_t, (0.6, 0.8, 0.6))); ax[0].set_title('ground truth')
ax[1].imshow(panel(fit_verts, fit.camera_translation, (0.6, 0.7, 0.9))); ax[1].set_title('SMPLify fit')
for a in ax:
  a.plot(*np.asarray(kp[0, 25:]).T, 'r.', ms=3); a.axis('off')
plt.show()''',
])


TRAIN = nb([
    'md:# Train SPIN on the embedded synthetic data\n\n' + badge('train.ipynb') + '\n\n'
    'A short run of SPIN\'s training loop (regressor + SMPLify in the loop) on '
    'the synthetic dataset rendered from the embedded free body model: no '
    'licensed files needed. Then the synthetic test split is evaluated with the '
    'same metrics as the paper\'s benchmarks.',
    SETUP,
    CONFIG_HELPER + '''
from spin_jax import train
WORKDIR = os.environ.get('SPIN_JAX_NOTEBOOK_WORKDIR') or os.path.join(ROOT, 'runs', 'notebook_train')
config = quickstart_config(SMALL)
print(config.model, 'steps:', config.num_train_steps, 'batch:', config.batch_size,
      'SMPLify in the loop:', config.run_smplify, config.smplify.mode)''',
    '''\
metrics = train.train_and_evaluate(config, WORKDIR)
print({k: round(float(v), 3) for k, v in sorted(metrics.items())})''',
    'md:## Training curve (from the TensorBoard logs)',
    '''\
import glob
import matplotlib.pyplot as plt
import tensorflow as tf

curves = {}
for path in glob.glob(os.path.join(WORKDIR, 'tensorboard', '**', 'events.*'), recursive=True):
  for event in tf.compat.v1.train.summary_iterator(path):
    for value in event.summary.value:
      if value.tag.endswith('loss') or value.tag.endswith('total'):
        v = value.simple_value if value.HasField('simple_value') else float(
            tf.make_ndarray(value.tensor))
        curves.setdefault(value.tag, []).append((event.step, v))
if curves:
  plt.figure(figsize=(5, 3))
  for tag, points in sorted(curves.items())[:4]:
    steps, values = zip(*sorted(points))
    plt.plot(steps, values, label=tag)
  plt.xlabel('step'); plt.yscale('log'); plt.legend(fontsize=7); plt.grid(True, alpha=0.3)
  plt.show()
else:
  print('no loss curves logged in', WORKDIR)''',
    'md:## Evaluate on the synthetic test split',
    '''\
from spin_jax import evaluate, inference
loaded = inference.load_model(WORKDIR)
predictor = inference.Predictor(loaded.model, loaded.body_model)
examples, n = evaluate.load_examples('synthetic', loaded.data_dir, 16 if SMALL else -1,
                                     config=loaded.config)
summary = evaluate.evaluate(predictor, evaluate.batched(examples, 8, predictor.img_res), 'synthetic',
                            body_model=loaded.body_model, batch_size=8, num_examples=n)
print({k: round(v, 1) for k, v in summary.items()})''',
])


def main():
  for name, notebook in (('demo.ipynb', DEMO), ('smplify.ipynb', SMPLIFY),
                         ('train.ipynb', TRAIN)):
    path = os.path.join(HERE, name)
    tmp = path + '.tmp'
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)
    print('wrote', path)


if __name__ == '__main__':
  main()
