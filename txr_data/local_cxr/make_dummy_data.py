r"""Generates a synthetic site's films in one of local_cxr's layouts (see synthetic.py).

python -m txr_data.local_cxr.make_dummy_data --out=/tmp/txr_site/raw [--layout=csv]
    [--format=png] [--num_images=300] [--prevalence=0.1]
"""

from absl import app
from absl import flags

from txr_data.local_cxr import films
from txr_data.local_cxr import synthetic

_OUT = flags.DEFINE_string("out", None, "The manual dir to write (replaced).", required=True)
_LAYOUT = flags.DEFINE_enum("layout", "csv", films.LAYOUTS, "How the site stores its labels.")
_FORMAT = flags.DEFINE_enum("format", "png", list(synthetic.FORMATS), "The films' file format.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 300, "Films.", lower_bound=1)
_PREVALENCE = flags.DEFINE_float("prevalence", 0.5, "Share of abnormal patients.", 0.0, 1.0)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_LESION_CONTRAST = flags.DEFINE_float(
  "lesion_contrast", 0.35, "Peak brightness of an abnormal film's opacities (0-1)."
)
_HEIGHT = flags.DEFINE_integer("height", None, "Film height in px (default 100-128).")


def main(argv):
  """Writes the set the flags describe."""
  del argv
  truth = synthetic.write_site(
    _OUT.value, _NUM_IMAGES.value, _LAYOUT.value, _FORMAT.value, _SEED.value,
    _PREVALENCE.value, _LESION_CONTRAST.value, height=_HEIGHT.value,
  )  # fmt: skip
  abnormal = sum(row["label"] for row in truth)
  print(f"Wrote {len(truth)} {_FORMAT.value} films ({abnormal} abnormal) to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
