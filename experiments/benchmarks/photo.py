r"""Photo benchmark: the bundled detector, and photo -> fitted 3D body end to end.

  python experiments/benchmarks/photo.py --json experiments/results/cpu/photo.json
  python experiments/benchmarks/photo.py --img_dir ~/photos

Images: --img_dir, or a set composed from the shipped real photo
(spin_jax/assets/astronaut.jpg): as is (512x512), mirrored, upscaled to
1024x1024, a 960x540 frame with the photo scaled into it, and a two-person
1024x512 composite (the photo beside its mirror image). Each image is processed
--repeats times after one warm-up pass (compilation), in interleaved rounds.

Reported (wall seconds, minimum over rounds of each image's time, summed over
the set; medians too):
  detector: images/s of spin_jax.detector.PoseDetector (people + landmarks);
  end to end: images/s and people/s of detector + spin_jax.photo.reconstruct
    (boxes, SMPLify fast from the mean parameters with 20 + 20 steps, the
    full-image camera and the mesh), without rendering or writing;
  render + write: seconds per image of photo.write_outputs (overlay, side
    view, keypoint image, .obj, .npz).
os.getloadavg() before and after is in the JSON (a shared machine). The last
stdout line is the JSON.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import cv2
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# pylint: disable=g-import-not-at-top
from spin_jax import fileio
from spin_jax import crops
from spin_jax import detector as detector_lib
from spin_jax import photo
from spin_jax import priors
from spin_jax import smpl_io

_IMG_DIR = flags.DEFINE_string('img_dir', None, 'Folder of photos; default: '
                               'the set composed from the shipped photo.')
_BODY_MODEL = flags.DEFINE_string('body_model', 'default', "'default', "
                                  "'default-low' or a path.")
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed rounds.')
_JSON = flags.DEFINE_string('json', None, 'Also write the result JSON here.')

ASTRONAUT = os.path.join(detector_lib.ASSETS_DIR, 'astronaut.jpg')


def default_images() -> dict[str, np.ndarray]:
  """The benchmark set from the shipped photo (module doc)."""
  a = crops.read_image(ASTRONAUT)
  frame = np.full((540, 960, 3), 90, np.uint8)
  small = cv2.resize(a, (400, 400), interpolation=cv2.INTER_AREA)
  frame[70:470, 280:680] = small
  return {
      'astronaut_512': a,
      'astronaut_mirrored_512': np.ascontiguousarray(a[:, ::-1]),
      'astronaut_1024': cv2.resize(a, (1024, 1024), interpolation=cv2.INTER_CUBIC),
      'astronaut_in_960x540': frame,
      'two_people_1024x512': np.concatenate([a, a[:, ::-1]], 1),
  }


def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def main(argv):
  del argv
  load_before = os.getloadavg()
  if _IMG_DIR.value:
    images = {os.path.basename(p): crops.read_image(p)
              for p in photo.list_images(_IMG_DIR.value)}
  else:
    images = default_images()
  detector = detector_lib.PoseDetector()
  body_model = smpl_io.resolve_body_model(_BODY_MODEL.value)
  prior = priors.default_pose_prior()

  def end_to_end(image):
    rec = photo.reconstruct(image, body_model, prior, detector=detector)
    jax.block_until_ready(rec.vertices)
    return rec

  # Warm-up: compiles SMPLify for every batch bucket the set needs.
  warm = {}
  for name, image in images.items():
    warm[name], rec = _timed(lambda: end_to_end(image))  # pylint: disable=cell-var-from-loop
    print(f'warm-up {name}: {rec.num_people} people, {warm[name]:.2f} s '
          '(with compilation)', file=sys.stderr)
  det_t = {n: [] for n in images}
  e2e_t = {n: [] for n in images}
  people = {}
  for _ in range(_REPEATS.value):
    for name, image in images.items():
      dt, found = _timed(lambda: detector(image))  # pylint: disable=cell-var-from-loop
      det_t[name].append(dt)
      dt, rec = _timed(lambda: end_to_end(image))  # pylint: disable=cell-var-from-loop
      e2e_t[name].append(dt)
      people[name] = (len(found), rec.num_people)
  with tempfile.TemporaryDirectory() as tmp:
    write_t = []
    for name, image in images.items():
      rec = end_to_end(image)
      dt, _ = _timed(lambda: photo.write_outputs(  # pylint: disable=cell-var-from-loop
          rec, image, tmp, name, body_model.faces))
      write_t.append(dt)

  n = len(images)
  det_min = sum(min(v) for v in det_t.values())
  det_med = sum(statistics.median(v) for v in det_t.values())
  e2e_min = sum(min(v) for v in e2e_t.values())
  e2e_med = sum(statistics.median(v) for v in e2e_t.values())
  n_people = sum(p[1] for p in people.values())
  result = dict(
      benchmark='photo',
      images=n, people=n_people,
      people_per_image={k: v[1] for k, v in people.items()},
      image_sizes={k: list(v.shape[:2]) for k, v in images.items()},
      detector_images_per_s=round(n / det_min, 2),
      detector_images_per_s_median=round(n / det_med, 2),
      detector_s_per_image={k: round(min(v), 4) for k, v in det_t.items()},
      end_to_end_images_per_s=round(n / e2e_min, 2),
      end_to_end_images_per_s_median=round(n / e2e_med, 2),
      end_to_end_people_per_s=round(n_people / e2e_min, 2),
      end_to_end_s_per_image={k: round(min(v), 4) for k, v in e2e_t.items()},
      first_call_s_with_compilation={k: round(v, 2) for k, v in warm.items()},
      render_and_write_s_per_image=round(statistics.mean(write_t), 3),
      smplify='fast, %d + %d steps, from the mean parameters (front and back)'
              % photo.PHOTO_FAST_ITERATIONS,
      body_model=_BODY_MODEL.value, repeats=_REPEATS.value,
      loadavg_before=[round(x, 2) for x in load_before],
      loadavg_after=[round(x, 2) for x in os.getloadavg()],
      cpu_count=os.cpu_count(), machine=platform.machine(),
      jax=jax.__version__, device=str(jax.devices()[0]))
  fileio.print_json_line(result, _JSON.value)


if __name__ == '__main__':
  app.run(main)
