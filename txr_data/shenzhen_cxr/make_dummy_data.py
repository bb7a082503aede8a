r"""Generates synthetic chest X-ray sets in the real archive's layout (see synthetic.py).

python -m txr_data.shenzhen_cxr.make_dummy_data [--seed=0]     # the embedded sample
python -m txr_data.shenzhen_cxr.make_dummy_data --num_images=662 --out=/tmp/txr_demo/raw
"""

import os

from absl import app
from absl import flags

from txr_data.shenzhen_cxr import synthetic

_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_NUM_IMAGES = flags.DEFINE_integer(
  "num_images", 64, "Images, half of each label while the archive's names last.", 2, 662
)
_LESION_CONTRAST = flags.DEFINE_float(
  "lesion_contrast", 0.35, "Peak brightness of an abnormal image's opacities (0-1)."
)
_NUISANCE = flags.DEFINE_float(
  "nuisance", 0.0, "Patient-to-patient variation (0-1): position, size, exposure, noise."
)
_FEMALE_LESION_CONTRAST = flags.DEFINE_float(
  "female_lesion_contrast",
  None,
  "The opacities' brightness in images whose reading says female (default: --lesion_contrast).",
)
_OUT = flags.DEFINE_string(
  "out", os.path.join(os.path.dirname(__file__), "dummy_data"), "Output dir."
)


def main(argv):
  """Writes the set the flags describe."""
  del argv
  root = synthetic.write_archive(
    _OUT.value,
    _NUM_IMAGES.value,
    _SEED.value,
    _LESION_CONTRAST.value,
    _NUISANCE.value,
    _FEMALE_LESION_CONTRAST.value,
  )
  print(f"Wrote {_NUM_IMAGES.value} images to {root}")


if __name__ == "__main__":
  app.run(main)
