r"""Exports a checkpoint's inference function with jax.export.

  python experiments/export.py --checkpoint=runs/quickstart \
      --out=runs/quickstart/spin.jaxexport [--platforms=cpu,cuda]

The artefact maps normalised crops (b, R, R, 3) float32 (any batch size b) to
rotmat, betas, cam, vertices, joints and cam_t, with the weights and the body
model baked in. Reload it with jax alone:

  import jax
  exp = jax.export.deserialize(open('spin.jaxexport', 'rb').read())
  out = exp.call(images)
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

from spin_jax import export  # pylint: disable=g-import-not-at-top
from spin_jax import inference

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or '
                                  'converted SPIN checkpoint directory.')
_BODY_MODEL = flags.DEFINE_string('body_model', None, "'default', "
                                  "'default-low' or a path to SMPL files.")
_OUT = flags.DEFINE_string('out', None, 'Output file.')
_PLATFORMS = flags.DEFINE_list('platforms', None, 'Lowering platforms, e.g. '
                               'cpu,cuda (default: the current backend).')
flags.mark_flags_as_required(['checkpoint', 'out'])


def main(argv):
  del argv
  loaded = inference.load_model(_CHECKPOINT.value, body_model=_BODY_MODEL.value)
  fn = export.make_inference_fn(loaded.model, loaded.body_model)
  img_res = loaded.model.config.img_res
  exported = export.export_inference(fn, img_res=img_res,
                                     platforms=_PLATFORMS.value)
  export.save(exported, _OUT.value)
  print(json.dumps(dict(out=_OUT.value, bytes=os.path.getsize(_OUT.value),
                        img_res=img_res, platforms=list(exported.platforms),
                        input=str(exported.in_avals[0]))))


if __name__ == '__main__':
  cli.run(main)
