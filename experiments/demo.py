r"""Runs the regressor on one image and writes the overlay, side view, meshes
and parameters.

  python experiments/demo.py --img=spin_jax/assets/demo.png \
      --checkpoint=runs/quickstart --out=runs/quickstart/demo
  python experiments/demo.py --img=im.jpg --bbox=120,40,200,420 ...
  python experiments/demo.py --img=im.jpg --bbox="10,20,100,300;300,20,90,280"
  python experiments/demo.py --img=im.jpg --openpose=im_keypoints.json ...

Without --bbox/--openpose the whole image is one person's box. Several boxes
(";"-separated) or several OpenPose people give several people. Outputs, for
image NAME: NAME_overlay.png, NAME_side.png, NAME_person{i}.obj (metres, the
full image's camera frame) and NAME_params.npz (see
spin_jax.inference.run_on_image; the full-image camera is documented in
spin_jax/inference.py).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

from spin_jax import inference  # pylint: disable=g-import-not-at-top

_IMG = flags.DEFINE_string('img', None, 'Input image.')
_BBOX = flags.DEFINE_string('bbox', None, 'x,y,w,h of a person box in pixels '
                            '(several separated by ";").')
_OPENPOSE = flags.DEFINE_string('openpose', None, 'OpenPose BODY_25 JSON; '
                                'one box per detected person.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or '
                                  'converted SPIN checkpoint directory.')
_BODY_MODEL = flags.DEFINE_string('body_model', None, "'default', "
                                  "'default-low' or a path to SMPL files.")
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_RESCALE = flags.DEFINE_float('rescale', inference.DEFAULT_RESCALE,
                              'Box enlargement around the person (SPIN: 1.2).')
_NO_RENDER = flags.DEFINE_bool('no_render', False, 'Skip the PNG renders.')
flags.mark_flags_as_required(['img', 'checkpoint', 'out'])


def main(argv):
  del argv
  if _BBOX.value and _OPENPOSE.value:
    raise app.UsageError('give --bbox or --openpose, not both.')
  image = inference.read_image(_IMG.value)
  if _BBOX.value:
    boxes = inference.parse_bbox_flag(_BBOX.value, _RESCALE.value)
  elif _OPENPOSE.value:
    boxes, _ = inference.boxes_from_openpose(_OPENPOSE.value, _RESCALE.value)
  else:
    boxes = [inference.whole_image_box(image.shape)]
  loaded = inference.load_model(_CHECKPOINT.value, body_model=_BODY_MODEL.value)
  predictor = inference.Predictor(loaded.model, loaded.body_model)
  name = os.path.splitext(os.path.basename(_IMG.value))[0]
  out = inference.run_on_image(predictor, image, boxes, _OUT.value, name,
                               render=not _NO_RENDER.value)
  summary = dict(people=len(boxes), files=out['files'],
                 cam_t=out['cam_t'].round(4).tolist(),
                 focal_length=out['focal_length'].round(2).tolist())
  print(json.dumps(summary))


if __name__ == '__main__':
  cli.run(main)
