r"""Writes the embedded Montgomery sample (12-bit PNGs, lung masks, readings); see synthetic.py.

python -m txr_data.montgomery_cxr.make_dummy_data [--seed=0]     # the embedded sample
python -m txr_data.montgomery_cxr.make_dummy_data --num_images=6 --out=/tmp/mc
"""

import os

from absl import app
from absl import flags

from txr_data.montgomery_cxr import synthetic

_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 20, "Images, half of each label.", 2, 20)
_OUT = flags.DEFINE_string(
  "out", os.path.join(os.path.dirname(__file__), "dummy_data"), "Writes <out>/MontgomerySet/."
)


def main(argv):
  """Writes the sample the flags describe."""
  del argv
  root = synthetic.write_archive(_OUT.value, _NUM_IMAGES.value, _SEED.value)
  print(f"Wrote {_NUM_IMAGES.value} images with lung masks to {root}")


if __name__ == "__main__":
  app.run(main)
