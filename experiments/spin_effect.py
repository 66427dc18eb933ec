r"""The SPIN effect where the paper's data situation holds.

  python experiments/spin_effect.py --preset=cpu    # 24 runs; 1 h 47 min, quiet 2-core CPU
  python experiments/spin_effect.py --preset=gpu    # one accelerator
  python experiments/spin_effect.py --preset=tiny   # seconds (tests/test_spin_effect.py)
  python experiments/spin_effect.py --preset=cpu --workdir=experiments/results/spin_effect_runs \
      --summarise_only --publish   # the committed JSON and figure from the committed runs

Re-running with the same --workdir resumes: finished runs are read back,
an interrupted one continues from its last checkpoint.

DATA (chosen before any result and not changed after; spin_jax/datasets/
synthetic.py, domains='studio_wild', part-coloured appearance so that a small
network learns in a CPU budget, as the quickstart):
  studio  3D/SMPL labels. Narrow on purpose, like Human3.6M / MPI-INF-3DHP:
          3 of the pose prior's 8 modes (standing, walking, sitting) at 0.6
          of their spread, yaw within +-45 deg, 5 subjects (fixed body
          shapes), plain backgrounds, nobody out of frame.
  wild    2D keypoints only (GT joints exact, OpenPose joints with 1.5 px
          noise and confidences 0.5-1), like LSP / MPII / COCO: the full
          prior, every viewpoint, a new shape per person, varied
          backgrounds, 25 % of the people partly outside the frame.
  test    drawn like `wild`, with full labels (the 3DPW role).
  The data are the same for every seed (data seed 0); seeds change the
  network's initialisation, the sampling order and the augmentation.

SETTINGS
  paired    studio (3D) + wild (2D), mixed 0.4 / 0.6 (SPIN's main table).
  unpaired  the same images with every 3D label ignored (SPIN's --ignore_3d,
            the paper's "unpaired" rows): the fits are the only 3D signal.

REGIMES (same data, budget and seeds)
  2d_only      2D keypoints only: no fit ever counts as valid supervision.
  static       SMPLify (faithful) once before training, from the initial
               network's prediction, then frozen (SPIN's static fits).
  inloop       SPIN: SMPLify 'faithful' (Adam, 100 + 100) in every step from
               the current prediction; the table, starting from the static
               fits as SPIN's does, keeps the better fit per sample.
  inloop_fast  the same with our SMPLify 'fast' (Levenberg-Marquardt, 5 + 4).
A diagnostic, run only when named (--regimes=static_loopfits, after inloop):
  static_loopfits  static, but frozen at the final fits table of the inloop
               run of the same setting and seed: do better targets, by
               themselves, reach the network?

MEASURED at every evaluation (config eval_every):
  test_pa_mpjpe / test_mpjpe   the network on (a fixed part of) the test set;
  fits_pa_mpjpe / fits_mpjpe   the fits table's rows of ALL wild training
                               images against their true bodies;
  net_train2d_pa_mpjpe         the network on a fixed subset of those images
                               (fits_subset_pa_mpjpe: the fits on the same);
  valid_fraction               wild rows whose fit passes SPIN's validity
                               threshold (reprojection loss on the
                               un-augmented crop < 100);
and, once, fits_floor_pa_mpjpe: SMPLify started from the TRUE bodies on wild
images (the objective's own floor). Errors are SPIN's protocol (H36M
regressor, 14 joints, pelvis-centred), in millimetres. The final row of each
run is the whole test set (PA-MPJPE, MPJPE, PVE).

OUTPUT: the JSON (per setting and regime the mean, std and per-seed values,
and the curves, means over seeds) and the figure. By default both go into
the run's folder, WORKDIR/spin_effect.json and WORKDIR/spin_effect.png
(--out, --figure name others; --figure= writes none). The committed results,
experiments/results/spin_effect.json and .png (the README's), are written
only when asked: --publish, or a --workdir, --out or --figure inside
experiments/results/. The tiny preset never writes there, even when asked
(one-line error, exit 2). We report what we measure; nothing here was tuned
to make an effect appear.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import platform
import shutil
import sys
import time

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.configs import default as default_config
from spin_jax import augment
from spin_jax import fileio
from spin_jax import fits as fits_lib
from spin_jax import input_pipeline
from spin_jax import metrics
from spin_jax import parallel
from spin_jax import smpl_io
from spin_jax import smplify as smplify_lib
from spin_jax import step as step_lib
from spin_jax import train
from spin_jax import validation
from spin_jax.datasets import scenes
from spin_jax.datasets import synthetic

SETTINGS = ('paired', 'unpaired')
REGIMES = ('2d_only', 'static', 'inloop', 'inloop_fast')
EXTRA_REGIMES = ('static_loopfits',)  # diagnostics, run only when named
ALL_REGIMES = REGIMES + EXTRA_REGIMES
DATA_SEED = 0
CURVE_KEYS = ('test_pa_mpjpe', 'test_mpjpe', 'fits_pa_mpjpe', 'fits_mpjpe',
              'net_train2d_pa_mpjpe', 'fits_subset_pa_mpjpe', 'valid_fraction')

# Everything the runs of a preset share. num_studio / num_wild / num_test
# are the synthetic splits; curve_test_size test images are scored at each
# evaluation (the final one scores all), probe_size wild images for the
# network's own error and the fits' floor.
PRESETS = {
    'cpu': dict(
        body_model='default-low', backbone='resnet18', img_res=80,
        hidden_dim=256, batch_size=32, num_train_steps=360, eval_every=60,
        learning_rate=3e-4, warmup_steps=20, num_studio=1000, num_wild=2000,
        num_test=500, image_size=96, curve_test_size=250, probe_size=256,
        seeds=(0, 1, 2), smplify_iterations=-1, eval_batch_size=50),
    'gpu': dict(
        body_model='default', backbone='resnet50', img_res=224,
        hidden_dim=1024, batch_size=64, num_train_steps=20000, eval_every=1000,
        learning_rate=1e-4, warmup_steps=500, num_studio=20000, num_wild=30000,
        num_test=2000, image_size=256, curve_test_size=1000, probe_size=1000,
        seeds=(0, 1, 2), smplify_iterations=-1, eval_batch_size=100),
    # For tests of this script only (the numbers mean nothing).
    'tiny': dict(
        body_model='default-low', backbone='stem', img_res=32, hidden_dim=32,
        batch_size=4, num_train_steps=2, eval_every=1, learning_rate=1e-4,
        warmup_steps=0, num_studio=8, num_wild=8, num_test=8, image_size=64,
        curve_test_size=8, probe_size=8, seeds=(0,), smplify_iterations=2,
        eval_batch_size=8),
}

_PRESET = flags.DEFINE_enum('preset', 'cpu', sorted(PRESETS), 'Settings.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/spin_effect', 'Runs go here.')
_OUT = flags.DEFINE_string('out', None, 'Result JSON (default: '
                           'WORKDIR/spin_effect.json).')
_FIGURE = flags.DEFINE_string('figure', None, 'Result figure ("" = none; '
                              'default: WORKDIR/spin_effect.png).')
_PUBLISH = flags.DEFINE_bool(
    'publish', False, 'Write the JSON and figure over the committed results, '
    'experiments/results/spin_effect.{json,png} (not with --preset=tiny).')
_SETTINGS = flags.DEFINE_list('settings', list(SETTINGS), 'Settings to run.')
_REGIMES = flags.DEFINE_list('regimes', list(REGIMES), 'Regimes to run.')
_SEEDS = flags.DEFINE_list('seeds', None, "Override the preset's seeds.")
_FRESH = flags.DEFINE_bool('fresh', False, 'Delete earlier runs in workdir '
                           '(default: resume / reuse them).')
_SUMMARISE_ONLY = flags.DEFINE_bool(
    'summarise_only', False, 'Train nothing: write the JSON and figure from '
    'the runs finished in --workdir (e.g. while the experiment still runs).')


# ---------------------------------------------------------------- outputs
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The committed results (the README's): written only when asked.
RESULTS_DIR = os.path.join(ROOT, 'experiments', 'results')
PUBLISHED_JSON = os.path.join(RESULTS_DIR, 'spin_effect.json')
PUBLISHED_FIGURE = os.path.join(RESULTS_DIR, 'spin_effect.png')


def in_results(path: str) -> bool:
  """True if path is experiments/results/ or anything under it."""
  real, results = os.path.realpath(path), os.path.realpath(RESULTS_DIR)
  return os.path.commonpath([real, results]) == results


def output_paths(preset_name: str, workdir: str, out: str | None = None,
                 figure: str | None = None,
                 publish: bool = False) -> tuple[str, str]:
  """(JSON path, figure path or '') of a call, by the module docstring's
  rule: the workdir by default, experiments/results/ only when asked, and
  never for the tiny preset."""
  if publish:
    if out is not None or figure is not None:
      raise ValueError('--publish writes experiments/results/spin_effect.json '
                       'and .png; give it without --out / --figure.')
    out, figure = PUBLISHED_JSON, PUBLISHED_FIGURE
  else:
    out = out or os.path.join(workdir, 'spin_effect.json')
    figure = os.path.join(workdir, 'spin_effect.png') if figure is None else figure
  if preset_name == 'tiny':
    for flag, path in (('workdir', workdir), ('out', out), ('figure', figure)):
      if path and in_results(path):
        raise ValueError(
            f'--preset=tiny never writes into experiments/results/ (the committed '
            f'results), but --{flag} is {path!r}'
            + (' (--publish)' if publish and flag != 'workdir' else '')
            + '; write it elsewhere.')
  return out, figure


# ---------------------------------------------------------------- configs
def synthetic_kwargs(preset: dict) -> dict:
  """The one synthetic build every run reads (spin_jax.datasets.synthetic)."""
  return dict(size=None, num_train_3d=preset['num_studio'],
              num_train_2d=preset['num_wild'], num_test=preset['num_test'],
              image_size=preset['image_size'], seed=DATA_SEED,
              body_model=preset['body_model'], appearance='parts',
              domains='studio_wild')


def describe(preset_name: str, preset: dict) -> dict:
  """The JSON's 'settings': the preset and the data's two domains."""
  return dict(preset=preset_name, **preset,
              data=dict(synthetic_kwargs(preset),
                        studio=dataclasses.asdict(scenes.STUDIO),
                        wild=dataclasses.asdict(scenes.WILD)),
              lr_schedule='cosine', data_seed=DATA_SEED)


def base_config(preset: dict, data_dir: str, seed: int):
  """The training configuration every run shares (quickstart-style recipe)."""
  c = default_config.get_config()
  c.seed = seed
  c.body_model = preset['body_model']
  c.model.backbone = preset['backbone']
  c.model.img_res = preset['img_res']
  c.model.hidden_dim = preset['hidden_dim']
  c.batch_size = preset['batch_size']
  c.num_train_steps = preset['num_train_steps']
  c.learning_rate = preset['learning_rate']
  c.lr_schedule = 'cosine'
  c.warmup_steps = preset['warmup_steps']
  c.data.datasets = 'synthetic'
  c.data.data_dir = data_dir
  c.data.synthetic_appearance = 'parts'
  c.data.synthetic_domains = 'studio_wild'
  c.data.flip_prob = 0.0      # a flip would swap the bone colours
  c.data.noise_factor = 0.1
  c.data.eval_split = ''      # this script's probe evaluates (eval_hooks)
  c.smplify.iterations = preset['smplify_iterations']
  c.eval_every = preset['eval_every']
  c.checkpoint_every = preset['eval_every']
  c.keep_checkpoints = 1
  c.render_every = 0
  c.log_every = preset['eval_every']
  c.progress_bar = False
  return c


def run_config(base, setting: str, regime: str, static_dir: str):
  """The configuration of one (setting, regime)."""
  c = base.copy_and_resolve_references()
  if setting not in SETTINGS:
    raise ValueError(f'--settings: unknown {setting!r}; expected {SETTINGS}.')
  c.data.ignore_3d = setting == 'unpaired'
  if regime == '2d_only':
    c.run_smplify = False
    c.fits_init = 'mean'
    c.fit_threshold = 0.0  # losses >= 0: no fit is ever valid supervision
  elif regime in ('static', 'static_loopfits'):
    c.run_smplify = False
    c.fits_init = 'static'
    c.static_fits_dir = static_dir
  elif regime in ('inloop', 'inloop_fast'):
    c.run_smplify = True
    c.fits_init = 'static'  # SPIN's in-loop table starts from the static fits
    c.static_fits_dir = static_dir
    c.smplify.mode = 'faithful' if regime == 'inloop' else 'fast'
  else:
    raise ValueError(f'--regimes: unknown {regime!r}; expected one of {ALL_REGIMES}.')
  return c


def train_pipeline(config, sources):
  """SPIN's input pipeline over the studio and wild splits, mixed 0.4 / 0.6."""
  pipe = input_pipeline.InputPipeline(
      sources, batch_size=config.batch_size, seed=config.seed, train=True,
      weights=input_pipeline.mixing_weights(
          {n: len(s) for n, s in sources}, synthetic.MIXING_GROUPS),
      augment_config=augment.AugmentConfig(
          img_res=config.model.img_res, flip_prob=config.data.flip_prob,
          noise_factor=config.data.noise_factor),
      ignore_3d=config.data.ignore_3d)
  return pipe


# ---------------------------------------------------------------- data scans
@dataclasses.dataclass
class Scan:
  """One ordered, un-augmented pass over some sources (their table order)."""
  keypoints: np.ndarray   # (N,49,3) crop coordinates in [-1, 1] + confidence
  pose: np.ndarray        # (N,72) true pose (stored for every split)
  betas: np.ndarray       # (N,10)
  index: np.ndarray       # (N,) fits-table row
  images: np.ndarray      # (min(N, keep_images), R, R, 3) normalised crops


def scan(sources, img_res: int, keep_images: int, batch_size: int = 64) -> Scan:
  pipe = input_pipeline.InputPipeline(
      sources, batch_size=batch_size, train=False,
      augment_config=augment.AugmentConfig(img_res=img_res))
  cols = {k: [] for k in ('keypoints', 'pose', 'betas', 'index', 'image')}
  kept = 0
  for batch in pipe:
    ok = batch['valid'] > 0
    for k in ('keypoints', 'pose', 'betas', 'index'):
      cols[k].append(batch[k][ok])
    take = min(int(ok.sum()), keep_images - kept)
    if take > 0:
      cols['image'].append(batch['image'][ok][:take])
      kept += take
  pipe.close()
  images = (np.concatenate(cols['image']) if cols['image'] else
            np.zeros((0, img_res, img_res, 3), np.float32))
  return Scan(*(np.concatenate(cols[k]) for k in ('keypoints', 'pose', 'betas',
                                                  'index')), images)


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield start, min(start + size, n)


def _padded(a: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([a, np.repeat(a[-1:], size - len(a), 0)]) if len(a) < size else a


@jax.jit
def _eval_joints(body_model, pose, betas):
  return validation.centred_j14(body_model, betas, pose)[0]


def fits_error(body_model, fit_rows: np.ndarray, gt_pose: np.ndarray,
               gt_betas: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Per-sample (PA-MPJPE, MPJPE) in mm of fits rows (N,82) against the true
  bodies, SPIN's evaluation joints (H36M regressor, J14, pelvis-centred)."""
  pa, mp = [], []
  for a, b in _chunks(len(fit_rows), chunk):
    n = b - a
    pred = np.asarray(_eval_joints(body_model, _padded(fit_rows[a:b, :72], chunk),
                                   _padded(fit_rows[a:b, 72:], chunk)))[:n]
    gt = np.asarray(_eval_joints(body_model, _padded(gt_pose[a:b], chunk),
                                 _padded(gt_betas[a:b], chunk)))[:n]
    pa.append(metrics.MM * metrics.pa_mpjpe(pred, gt))
    mp.append(metrics.MM * metrics.mpjpe(pred, gt))
  return np.concatenate(pa), np.concatenate(mp)


@jax.jit
def _score(body_model, pose, betas, keypoints):
  return fits_lib.score_fit(body_model, pose, betas,
                            fits_lib.keypoints_to_pixels(keypoints))[1]


def fit_losses(body_model, fit_rows, keypoints, chunk: int = 256) -> np.ndarray:
  """(N,) SPIN's fit score (least-squares camera, mean reprojection loss) of
  fits rows on un-augmented crop keypoints."""
  out = []
  for a, b in _chunks(len(fit_rows), chunk):
    out.append(np.asarray(_score(
        body_model, _padded(fit_rows[a:b, :72], chunk),
        _padded(fit_rows[a:b, 72:], chunk), _padded(keypoints[a:b], chunk)))[:b - a])
  return np.concatenate(out)


# ---------------------------------------------------------------- SMPLify passes
def _smplify_rows(body_model, prior, init_fn, scan_: Scan, cfg, batch: int,
                  fallback: np.ndarray) -> np.ndarray:
  """(N,82) SMPLify results over a scan; init_fn(a, b) -> FitParams."""
  fn = jax.jit(lambda m, p, init, kp: smplify_lib.smplify(m, p, init, kp, cfg))
  rows = []
  for a, b in _chunks(len(scan_.index), batch):
    n = b - a
    init = jax.tree.map(lambda x: _padded(np.asarray(x), batch), init_fn(a, b))
    kp = fits_lib.keypoints_to_pixels(_padded(scan_.keypoints[a:b], batch))
    res = fn(body_model, prior, init, kp)
    p = res.params
    r = np.concatenate([np.asarray(p.global_orient), np.asarray(p.body_pose),
                        np.asarray(p.betas)], -1)[:n]
    bad = ~np.all(np.isfinite(r), -1)
    r[bad] = fallback[a:b][bad]
    rows.append(r)
  return np.concatenate(rows).astype(np.float32)


def static_fits(config, sources, layout, out_dir: str, body_model, prior,
                batch: int) -> None:
  """SMPLify (faithful) once from the initial network's prediction (eval
  mode, the un-augmented crop), written as SPIN's <dataset>_fits.npy files."""
  if all(os.path.isfile(os.path.join(out_dir, f'{n}_fits.npy')) for n, _, _ in layout):
    return
  model = step_lib.create_model(config)
  model.eval()
  graphdef, state = nnx.split(model)
  cfg = smplify_lib.SMPLifyConfig(mode='faithful')

  @jax.jit
  def fit(state, images, keypoints, body_model, prior):
    pred = nnx.merge(graphdef, state)(images)
    res = step_lib.smplify_from_prediction(
        pred, fits_lib.keypoints_to_pixels(keypoints), body_model, prior, cfg)
    p = res.params
    return jnp.concatenate([p.global_orient, p.body_pose, p.betas], -1)

  table = np.zeros((max(off + n for _, off, n in layout), 82), np.float32)
  pipe = input_pipeline.InputPipeline(
      sources, batch_size=batch, train=False,
      augment_config=augment.AugmentConfig(img_res=config.model.img_res))
  for b in pipe:
    rows = np.asarray(fit(state, b['image'], b['keypoints'], body_model, prior))
    ok = (b['valid'] > 0) & np.all(np.isfinite(rows), -1)
    table[b['index'][ok]] = rows[ok]  # rows SMPLify failed on stay at 0 (rest pose)
  pipe.close()
  os.makedirs(out_dir, exist_ok=True)
  for name, off, n in layout:
    path = os.path.join(out_dir, f'{name}_fits.npy')
    fileio.atomic_write_bytes(path, _npy_bytes(table[off:off + n]))


def _npy_bytes(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


def fits_floor(body_model, prior, wild: Scan, batch: int) -> dict[str, float]:
  """SMPLify from the TRUE bodies on wild keypoints: PA-MPJPE (mm) of the
  result, per mode (the objective's floor: what a perfect start gives)."""
  n = len(wild.images)  # the probe subset
  sub = Scan(wild.keypoints[:n], wild.pose[:n], wild.betas[:n], wild.index[:n],
             wild.images)
  truth = np.concatenate([sub.pose, sub.betas], -1)

  @jax.jit
  def true_camera(m, pose, betas, kp):
    return fits_lib.score_fit(m, pose, betas, fits_lib.keypoints_to_pixels(kp))[0]

  def init_fn(a, b):
    cam = true_camera(body_model, sub.pose[a:b], sub.betas[a:b], sub.keypoints[a:b])
    return smplify_lib.FitParams(global_orient=sub.pose[a:b, :3],
                                 body_pose=sub.pose[a:b, 3:], betas=sub.betas[a:b],
                                 camera_translation=np.asarray(cam))
  out = {}
  for mode in ('faithful', 'fast'):
    rows = _smplify_rows(body_model, prior, init_fn, sub,
                         smplify_lib.SMPLifyConfig(mode=mode), batch, truth)
    out[mode] = float(np.mean(fits_error(body_model, rows, sub.pose, sub.betas)[0]))
  return out


# ---------------------------------------------------------------- the probe
class Probe:
  """eval hook: measures the network and the fits table, keeps the curve.

  The curve lives in <run_dir>/curve.json (rewritten atomically, one point
  per step, so a resumed run continues it).
  """

  def __init__(self, run_dir, graphdef, test: Scan, wild: Scan, wild_offset,
               curve_test_size, final_step, fit_threshold, batch, mesh):
    self.path = os.path.join(run_dir, 'curve.json')
    self.eval_fn = validation.make_eval_fn(graphdef)
    self.test, self.wild, self.wild_offset = test, wild, wild_offset
    self.curve_test_size = curve_test_size
    self.final_step = final_step
    self.fit_threshold = fit_threshold
    self.batch, self.mesh = batch, mesh
    self.points = {}
    if os.path.isfile(self.path):
      with open(self.path) as f:
        self.points = {int(p['step']): p for p in json.load(f)}

  def _network(self, state, body_model, images, pose, betas):
    def batches():
      for a, b in _chunks(len(images), self.batch):
        valid = np.zeros(self.batch, np.float32)
        valid[:b - a] = 1
        yield dict(image=_padded(images[a:b], self.batch),
                   pose=_padded(pose[a:b], self.batch),
                   betas=_padded(betas[a:b], self.batch), valid=valid)
    return validation.validate(self.eval_fn, state, batches(), body_model, self.mesh)

  def __call__(self, step, state, body_model):
    t0 = time.time()
    n = self.curve_test_size if step < self.final_step else len(self.test.images)
    test = self._network(state, body_model, self.test.images[:n],
                         self.test.pose[:n], self.test.betas[:n])
    k = len(self.wild.images)
    net = self._network(state, body_model, self.wild.images, self.wild.pose[:k],
                        self.wild.betas[:k])
    rows = np.asarray(parallel.to_host(state.fits.params))[
        self.wild.index + self.wild_offset]
    fit_pa, fit_mp = fits_error(body_model, rows, self.wild.pose, self.wild.betas)
    loss = fit_losses(body_model, rows, self.wild.keypoints)
    point = dict(step=int(step), test_pa_mpjpe=test['pa_mpjpe'],
                 test_mpjpe=test['mpjpe'], test_pve=test['pve'],
                 test_size=int(n), fits_pa_mpjpe=float(fit_pa.mean()),
                 fits_mpjpe=float(fit_mp.mean()),
                 fits_subset_pa_mpjpe=float(fit_pa[:k].mean()),
                 net_train2d_pa_mpjpe=net['pa_mpjpe'],
                 valid_fraction=float(np.mean(loss < self.fit_threshold)),
                 load_avg=os.getloadavg()[0], probe_s=time.time() - t0)
    self.points[int(step)] = point
    fileio.atomic_write_json(self.path, [self.points[s] for s in sorted(self.points)])
    print(f'  step {step:5d}: test PA-MPJPE {point["test_pa_mpjpe"]:.1f} '
          f'(n={n}), fits {point["fits_pa_mpjpe"]:.1f}, net on wild train '
          f'{point["net_train2d_pa_mpjpe"]:.1f}, valid {point["valid_fraction"]:.2f}',
          flush=True)
    return {k2: point[k2] for k2 in ('test_pa_mpjpe', 'fits_pa_mpjpe',
                                     'net_train2d_pa_mpjpe', 'valid_fraction')}


# ---------------------------------------------------------------- one run
def run_one(run_dir, config, sources, test, wild, wild_offset, preset, mesh,
            body_model, prior) -> dict:
  """Trains one (setting, regime, seed), resuming; returns its result."""
  result_path = os.path.join(run_dir, 'result.json')
  if os.path.isfile(result_path):
    with open(result_path) as f:
      return json.load(f)
  graphdef = step_lib.split_model(step_lib.create_model(config))[0]
  probe = Probe(run_dir, graphdef, test, wild, wild_offset,
                preset['curve_test_size'], config.num_train_steps,
                config.fit_threshold, preset['eval_batch_size'], mesh)
  wall, cpu = time.time(), time.process_time()
  train.train_and_evaluate(config, run_dir, body_model=body_model, prior=prior,
                           train_data=train_pipeline(config, sources),
                           eval_data=None, eval_hooks=(probe,))
  points = [probe.points[s] for s in sorted(probe.points)]
  final = points[-1]
  if final['step'] != config.num_train_steps:
    raise RuntimeError(f'{run_dir}: training ended at step {final["step"]}, '
                       f'expected {config.num_train_steps}.')
  result = dict(pa_mpjpe=final['test_pa_mpjpe'], mpjpe=final['test_mpjpe'],
                pve=final['test_pve'],
                curve={k: [p[k] for p in points] for k in ('step',) + CURVE_KEYS},
                wall_s=time.time() - wall, cpu_s=time.process_time() - cpu,
                mean_load=float(np.mean([p['load_avg'] for p in points])))
  fileio.atomic_write_json(result_path, result)
  return result


# ---------------------------------------------------------------- summary
def summarise(results: dict, settings_info: dict, floor: dict, machine_: str) -> dict:
  """results[setting][regime][seed] -> the JSON of the module docstring."""
  out = {}
  for setting, regimes in results.items():
    out[setting] = {}
    for regime, seeds in regimes.items():
      runs = [seeds[s] for s in sorted(seeds)]
      pa = [r['pa_mpjpe'] for r in runs]
      entry = dict(pa_mpjpe=float(np.mean(pa)),
                   pa_mpjpe_std=float(np.std(pa, ddof=1)) if len(pa) > 1 else 0.0,
                   pa_mpjpe_seeds=pa, seeds=sorted(seeds),
                   mpjpe=float(np.mean([r['mpjpe'] for r in runs])),
                   pve=float(np.mean([r['pve'] for r in runs])),
                   wall_s=float(np.sum([r['wall_s'] for r in runs])))
      curve = {'step': runs[0]['curve']['step']}
      for k in CURVE_KEYS:
        curve[k] = np.mean([r['curve'][k] for r in runs], 0).tolist()
      entry['curve'] = curve
      entry['curve_seeds'] = {s: seeds[s]['curve'] for s in sorted(seeds)}
      out[setting][regime] = entry
    have = [r for r in REGIMES if r in out[setting]]
    out[setting]['differences'] = seed_differences(regimes)
    if {'2d_only', 'static', 'inloop'} <= set(have):
      p = {r: out[setting][r]['pa_mpjpe'] for r in have}
      out[setting]['paper_order_holds'] = bool(
          p['inloop'] < p['static'] < p['2d_only'])
  runs = [r for regimes in results.values() for seeds in regimes.values()
          for r in seeds.values()]
  loads = [r['mean_load'] for r in runs if 'mean_load' in r]
  settings_info['runs'] = dict(
      count=len(runs), total_wall_s=float(sum(r['wall_s'] for r in runs)),
      total_cpu_s=float(sum(r.get('cpu_s', 0.0) for r in runs)),
      wall_s_min=float(min(r['wall_s'] for r in runs)),
      wall_s_max=float(max(r['wall_s'] for r in runs)),
      mean_load_min=float(min(loads)) if loads else None,
      mean_load_max=float(max(loads)) if loads else None)
  out['fits_floor_pa_mpjpe'] = floor.get('faithful')
  out['fits_floor_pa_mpjpe_fast'] = floor.get('fast')
  out['settings'] = settings_info
  out['machine'] = machine_
  return out


# Regime pairs compared seed by seed (a - b: negative means a is better).
# Seeds share the data, the initialisation and the sampling order, so the
# per-seed difference removes the spread between seeds that the means carry.
DIFFERENCES = (('static', '2d_only'), ('inloop', '2d_only'), ('inloop', 'static'),
               ('inloop_fast', 'static'), ('inloop_fast', 'inloop'),
               ('static_loopfits', 'static'), ('static_loopfits', 'inloop'))


def seed_differences(regimes: dict) -> dict:
  """{'a-b': {mean, std, seeds}} of test PA-MPJPE on the seeds both ran."""
  out = {}
  for a, b in DIFFERENCES:
    if a not in regimes or b not in regimes:
      continue
    seeds = sorted(set(regimes[a]) & set(regimes[b]))
    if not seeds:
      continue
    d = [regimes[a][s]['pa_mpjpe'] - regimes[b][s]['pa_mpjpe'] for s in seeds]
    out[f'{a}-{b}'] = dict(mean=float(np.mean(d)), seeds=seeds, per_seed=d,
                           std=float(np.std(d, ddof=1)) if len(d) > 1 else 0.0)
  return out


def markdown_table(out: dict) -> str:
  lines = ['| setting | regime | PA-MPJPE (mm) | MPJPE | PVE | fits PA-MPJPE start -> end | '
           'valid fits end |', '|---|---|---|---|---|---|---|']
  for setting in SETTINGS:
    for regime in ALL_REGIMES:
      e = out.get(setting, {}).get(regime)
      if not e:
        continue
      c = e['curve']
      lines.append(
          f"| {setting} | {regime} | {e['pa_mpjpe']:.1f} +- {e['pa_mpjpe_std']:.1f} | "
          f"{e['mpjpe']:.1f} | {e['pve']:.1f} | {c['fits_pa_mpjpe'][0]:.1f} -> "
          f"{c['fits_pa_mpjpe'][-1]:.1f} | {c['valid_fraction'][-1]:.2f} |")
  return '\n'.join(lines)


def plot(out: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  settings = [s for s in SETTINGS if s in out]
  fig, axes = plt.subplots(len(settings), 2, figsize=(11, 3.6 * len(settings)),
                           squeeze=False)
  colours = dict(zip(ALL_REGIMES, ('tab:grey', 'tab:blue', 'tab:red',
                                   'tab:orange', 'tab:green')))
  for row, setting in zip(axes, settings):
    for regime in ALL_REGIMES:
      e = out[setting].get(regime)
      if not e:
        continue
      c = e['curve']
      row[0].plot(c['step'], c['test_pa_mpjpe'], color=colours[regime],
                  label=f"{regime} ({e['pa_mpjpe']:.1f})")
      if regime != '2d_only':
        row[1].plot(c['step'], c['fits_pa_mpjpe'], color=colours[regime],
                    label=f'{regime}: fits table')
      row[1].plot(c['step'], c['net_train2d_pa_mpjpe'], color=colours[regime],
                  ls='--', label=f'{regime}: network')
    if out.get('fits_floor_pa_mpjpe'):
      row[1].axhline(out['fits_floor_pa_mpjpe'], color='k', ls=':',
                     label='SMPLify from the truth')
    row[0].set_title(f'{setting}: test PA-MPJPE (mm)')
    row[1].set_title(f'{setting}: wild training images, PA-MPJPE (mm)')
    for ax in row:
      ax.set_xlabel('step')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path + '.tmp.png', dpi=90)
  os.replace(path + '.tmp.png', path)
  plt.close(fig)


def machine() -> str:
  dev = jax.devices()[0]
  kind = getattr(dev, 'device_kind', dev.platform)
  cpu = platform.processor() or platform.machine()
  return (f'{len(jax.devices())} x {kind} ({dev.platform}); host: {cpu}, '
          f'{os.cpu_count()} cores; jax {jax.__version__}')


# ---------------------------------------------------------------- main
def run_path(workdir: str, setting: str, regime: str, seed: int) -> str:
  """The folder of one run; its result.json marks it finished."""
  return os.path.join(workdir, setting, regime, f'seed{seed}')


def loopfits_dir(workdir: str, setting: str, seed: int) -> str:
  """Where the inloop run of (setting, seed) leaves its final fits table."""
  return os.path.join(run_path(workdir, setting, 'inloop', seed), 'fits')


def run_experiment(preset_name: str, workdir: str, out_path: str | None = None,
                   figure_path: str | None = None, settings=SETTINGS,
                   regimes=REGIMES, seeds=None, fresh: bool = False,
                   summarise_only: bool = False, publish: bool = False) -> dict:
  """Runs (or resumes) every (seed, setting, regime); writes the JSON of
  every run finished in workdir (also those of earlier calls) to
  output_paths(...)."""
  preset = dict(PRESETS[preset_name])
  seeds = tuple(int(s) for s in (seeds or preset['seeds']))
  workdir = os.path.abspath(workdir)
  out_path, figure_path = output_paths(preset_name, workdir, out_path,
                                       figure_path, publish)
  floor_path = os.path.join(workdir, 'fits_floor.json')
  if summarise_only:
    return write_summary(workdir, out_path, figure_path, preset_name, preset,
                         seeds, floor_path)
  for flag, given, known in (('settings', settings, SETTINGS),
                             ('regimes', regimes, ALL_REGIMES)):
    unknown = [g for g in given if g not in known]
    if unknown:  # before any data is built
      raise ValueError(f'--{flag}: unknown {unknown}; expected some of {known}.')
  regimes = [r for r in ALL_REGIMES if r in regimes]  # inloop before static_loopfits
  if fresh and os.path.isdir(workdir):
    shutil.rmtree(workdir)
  if 'static_loopfits' in regimes and 'inloop' not in regimes:
    for setting in settings:
      for seed in seeds:
        if not os.path.isfile(os.path.join(
            run_path(workdir, setting, 'inloop', seed), 'result.json')):
          raise ValueError(
              f'--regimes=static_loopfits needs the finished inloop run of '
              f'{setting} seed {seed} in --workdir {workdir!r} (add '
              '--regimes=inloop, or run it first).')
  os.makedirs(workdir, exist_ok=True)
  # Runs of the same regime compile the same programs: keep them on disk.
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  t_start, cpu_start = time.time(), time.process_time()
  data_dir = os.path.join(workdir, 'data')
  synth = synthetic_kwargs(preset)
  sources = synthetic.sources(data_dir, 'train', **synth)
  test_sources = synthetic.sources(data_dir, 'test', **synth)
  mesh = parallel.make_mesh()
  body_model = smpl_io.resolve_body_model(preset['body_model'])
  base0 = base_config(preset, data_dir, seeds[0])
  prior = train.load_prior(base0)  # pylint: disable=protected-access
  layout_pipe = train_pipeline(base0, sources)
  layout, wild_offset = layout_pipe.layout, layout_pipe.dataset_offsets['synthetic-2d']
  layout_pipe.close()

  res = preset['img_res']
  print('scanning the data ...', flush=True)
  wild = scan([(n, src) for n, src in sources if n == 'synthetic-2d'], res, keep_images=preset['probe_size'])
  test = scan(test_sources, res, keep_images=preset['num_test'])
  if not os.path.isfile(floor_path):
    fileio.atomic_write_json(floor_path, fits_floor(
        body_model, prior, wild, preset['eval_batch_size']))

  this_call = {}
  for seed in seeds:
    base = base_config(preset, data_dir, seed)
    static_dir = os.path.join(workdir, 'static_fits', f'seed{seed}')
    static_fits(base, sources, layout, static_dir, body_model, prior,
                preset['eval_batch_size'])
    for setting in settings:
      for regime in regimes:
        run_dir = run_path(workdir, setting, regime, seed)
        print(f'== {setting} / {regime} / seed {seed}', flush=True)
        config = run_config(base, setting, regime,
                            loopfits_dir(workdir, setting, seed)
                            if regime == 'static_loopfits' else static_dir)
        r = run_one(run_dir, config, sources, test, wild, wild_offset, preset,
                    mesh, body_model, prior)
        print(f'   PA-MPJPE {r["pa_mpjpe"]:.1f}, MPJPE {r["mpjpe"]:.1f}, '
              f'{r["wall_s"]:.0f} s', flush=True)
        this_call = dict(wall_s_this_call=time.time() - t_start,
                         cpu_s_this_call=time.process_time() - cpu_start)
        write_summary(workdir, out_path, '', preset_name, preset, seeds,
                      floor_path, this_call, quiet=True)
  return write_summary(workdir, out_path, figure_path, preset_name, preset,
                       seeds, floor_path, this_call)


def write_summary(workdir, out_path, figure_path, preset_name, preset, seeds,
                  floor_path, extra_info=None, quiet=False) -> dict:
  """The JSON (and figure) of every run finished in workdir: all settings,
  regimes (diagnostics included) and the given seeds; trains nothing."""
  results = {s: {r: {} for r in ALL_REGIMES} for s in SETTINGS}
  for setting, regimes in results.items():
    for regime in regimes:
      for seed in seeds:
        path = os.path.join(run_path(workdir, setting, regime, seed), 'result.json')
        if os.path.isfile(path):
          with open(path) as f:
            regimes[regime][seed] = json.load(f)
  wanted = len(SETTINGS) * len(REGIMES) * len(seeds)
  finished = {s: {g: v for g, v in rs.items() if v} for s, rs in results.items()}
  finished = {s: rs for s, rs in finished.items() if rs}
  done = sum(len(finished.get(s, {}).get(g, {})) for s in SETTINGS for g in REGIMES)
  if not finished:
    raise FileNotFoundError(f'--workdir {workdir!r}: no finished run '
                            '(<setting>/<regime>/seed<k>/result.json).')
  floor = {}
  if os.path.isfile(floor_path):
    with open(floor_path) as f:
      floor = json.load(f)
  info = dict(describe(preset_name, preset), runs_finished=done,
              runs_planned=wanted, **(extra_info or {}))
  out = summarise(finished, info, floor, machine())
  out['complete'] = done == wanted
  fileio.atomic_write_json(out_path, out, indent=1)
  if figure_path:
    plot(out, figure_path)
  if not quiet:
    print(markdown_table(out))
    print(f'wrote {out_path}' + (f' and {figure_path}' if figure_path else ''))
  return out


def main(argv):
  del argv
  run_experiment(_PRESET.value, _WORKDIR.value, _OUT.value, _FIGURE.value,
                 _SETTINGS.value, _REGIMES.value, _SEEDS.value, _FRESH.value,
                 _SUMMARISE_ONLY.value, _PUBLISH.value)


if __name__ == '__main__':
  cli.run(main)
