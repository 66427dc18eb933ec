"""Default training configuration: SPIN's paper setting.

Use with experiments/train.py: `--config=experiments/configs/default.py` (the
default), optionally `--config=experiments/configs/default.py:tiny` for the
seconds-long test setting, and override any field with `--config.FIELD=VALUE`
or with a flagfile (experiments/flagfiles/*.flags).
"""
import ml_collections

from spin_jax import constants


def get_config(mode: str = '') -> ml_collections.ConfigDict:
  """Returns the configuration; mode 'tiny' gives the small CPU test setting."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.tiny = False

  # Body model and priors: 'default' is the embedded free model (spin_jax/assets),
  # 'default-low' its low-resolution version, or a path to SMPL files.
  c.body_model = 'default'
  c.pose_prior = 'default'    # 'default' or a path to gmm_08.pkl / our npz
  c.mean_params = ''          # '' = shipped default, or SPIN's smpl_mean_params.npz

  # Regressor (spin_jax.models.HMR).
  c.model = ml_collections.ConfigDict()
  c.model.backbone = 'resnet50'
  c.model.img_res = constants.IMG_RES
  c.model.dropout = 0.5
  c.model.hidden_dim = 1024
  c.model.num_iterations = 3
  # 'bfloat16': convs and dense layers compute in bfloat16 (mixed precision);
  # parameters, BatchNorm statistics, the optimiser, body model, SMPLify and
  # losses stay float32.
  # 'float64' needs JAX_ENABLE_X64=1 (parameters float64 too).
  c.model.dtype = 'float32'
  # Training's backward pass: 'auto' = spin_jax.layers' hand-written
  # gradients on XLA:CPU (same function, ~1.5x faster step there), XLA's
  # native ops elsewhere; 'fast' or 'native' to force one.
  c.model.layers = 'auto'
  c.init_checkpoint = ''      # orbax params dir (converted SPIN / ImageNet weights)

  # Data (spin_jax.input_pipeline).
  c.data = ml_collections.ConfigDict()
  c.data.datasets = 'synthetic'   # comma-separated names, or 'spin' = SPIN's 6 sets
  c.data.data_dir = ''            # '' -> <workdir>/data (synthetic is built there)
  c.data.mixing = 'spin'          # 'spin' proportions or 'uniform'
  c.data.ignore_3d = False        # the "unpaired" setting: has_smpl = has_pose_3d = 0
  c.data.num_workers = 0
  c.data.synthetic_train_size = 2048
  c.data.synthetic_test_size = 256
  # 'clothes' (random skin / clothing colours) or 'parts' (a fixed colour per
  # skinning bone: the easy quickstart setting, spin_jax/datasets/synthetic.py).
  c.data.synthetic_appearance = 'clothes'
  # < 1 narrows the synthetic poses around the pose prior's 8 modes (easy).
  c.data.synthetic_pose_scale = 1.0
  # 'studio_wild': 3D labels only on a narrow studio split, the 2D-only and test
  # splits in the wild (SPIN's data situation; experiments/spin_effect.py).
  c.data.synthetic_domains = 'same'
  c.data.eval_split = 'synthetic_test'
  c.data.eval_size = 256          # samples of the validation split per evaluation
  # Training augmentation (SPIN: flip 0.5, per-channel pixel noise U[0.6, 1.4];
  # the quickstart's 'parts' images train without flips, spin_jax/datasets/synthetic.py).
  c.data.flip_prob = 0.5
  c.data.noise_factor = 0.4

  # Optimisation (SPIN: Adam 5e-5, batch 64, no schedule, no weight decay).
  c.batch_size = constants.BATCH_SIZE
  c.learning_rate = constants.LEARNING_RATE
  c.num_epochs = constants.NUM_EPOCHS
  c.num_train_steps = -1          # > 0 overrides num_epochs
  c.lr_schedule = 'constant'      # SPIN; 'cosine': warmup, cosine decay to 0
  c.warmup_steps = 0              # linear warmup of the 'cosine' schedule

  # Loss weights (SPIN_FACTS, "Training loss").
  c.loss = ml_collections.ConfigDict(dict(constants.LOSS_WEIGHTS))
  c.loss.openpose = constants.OPENPOSE_KEYPOINT_WEIGHT      # 2D weight, joints 0..24
  c.loss.gt_keypoints = constants.GT_KEYPOINT_WEIGHT        # 2D weight, joints 25..48

  # Fits in the loop.
  c.run_smplify = True
  c.fits_init = 'auto'            # 'static' | 'mean' | 'smplify' | 'auto'
  c.static_fits_dir = ''          # folder with <dataset>_fits.npy
  c.fit_threshold = constants.FIT_VALIDITY_THRESHOLD
  c.smplify = ml_collections.ConfigDict()
  c.smplify.mode = 'faithful'     # 'faithful' (Adam 100+100, SPIN) or 'fast'
  c.smplify.iterations = -1       # per stage; -1 = mode default (faithful 100/100, fast 5/4)
  c.smplify.lr = 1e-2

  # Logging, checkpoints, evaluation (in steps).
  c.log_every = 50
  c.checkpoint_every = 10_000
  c.keep_checkpoints = 3
  c.render_every = 500
  c.eval_every = 5_000
  c.progress_bar = True
  c.stop_on_nonfinite = True

  if mode == 'tiny':
    apply_tiny(c)
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds-per-step CPU setting for tests: ResNet stem only, 32 px, 4 SMPLify its."""
  c.tiny = True
  c.body_model = 'default-low'
  c.model.backbone = 'stem'      # ResNet stem only (conv, BN, pool): tests only
  c.model.img_res = 32
  c.model.hidden_dim = 32
  c.batch_size = 4
  c.num_train_steps = 4
  c.data.synthetic_train_size = 32
  c.data.synthetic_test_size = 8
  c.data.eval_size = 8
  c.smplify.iterations = 4
  c.log_every = 1
  c.checkpoint_every = 2
  c.render_every = 0
  c.eval_every = 0
  c.progress_bar = False
  return c
