"""shenzhen_cxr: the NLM Shenzhen Hospital tuberculosis chest X-ray set."""

import concurrent.futures
import dataclasses
import hashlib
import os
import re

from absl import logging
from etils import epath
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from txr_data import image_codec

_URL = "https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip"
_HOMEPAGE = "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets"

_IMAGE_RE = re.compile(r"^CHNCXR_(?P<id>\d{4})_(?P<label>[01])\.png$")
# Lung masks shipped beside the images in some releases; not classification data.
_MASK_RE = re.compile(r"^CHNCXR_\d{4}_[01]_mask\.png$")
_READING_RE = re.compile(
  r"^\s*(?:(?P<sex>female|male|f|m)(?![a-z]))?[\s,;:]*"
  r"(?:(?P<age>\d+)\s*(?P<unit>[a-z]*))?",
  re.IGNORECASE,
)
NUM_FOLDS = 10
_SPLIT_OF_FOLD = ["train"] * 7 + ["validation"] + ["test"] * 2
_WORKERS = os.cpu_count() or 1  # Read at import: TFDS tests mock `os`.


@dataclasses.dataclass(eq=False, kw_only=True)
class ShenzhenConfig(tfds.core.BuilderConfig):
  """A BuilderConfig that carries its image size, as TFDS's own builders do.

  Attributes:
    max_side: the longest side in px after an area resize (aspect kept), or
      None to store the source pixels.
  """

  max_side: int | None = None


@dataclasses.dataclass(frozen=True)
class Reading:
  """One ClinicalReadings file: what could be parsed, the rest left unknown."""

  sex: str = "unknown"
  age: int = -1
  finding: str = ""


def label_of(filename: str) -> int:
  """Returns 0 (normal) or 1 (abnormal) from a `CHNCXR_<id>_<0|1>.png` name."""
  match = _IMAGE_RE.match(os.path.basename(filename))
  if not match:
    raise ValueError(
      f"{filename}: expected a name like CHNCXR_0001_0.png (suffix _0 normal,"
      " _1 abnormal); rename or remove this file."
    )
  return int(match["label"])


def parse_reading(text: str) -> Reading:
  """Parses a ClinicalReadings file: sex and age on line 1, the finding after.

  The first line varies in the archive ('male 35yrs', 'Male,35yr',
  'female 25', 'O' for unknown); what cannot be parsed is left unknown.
  """
  lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
  lines = [line for line in lines if line]
  if not lines:
    return Reading()
  match = _READING_RE.match(lines[0])
  sex = {"f": "female", "m": "male"}.get((match["sex"] or "u")[0].lower(), "unknown")
  age = -1
  if match["age"]:
    # Infants are recorded in months or days: they are 0 years old.
    age = 0 if match["unit"].lower().startswith(("m", "d")) else int(match["age"])
  return Reading(sex=sex, age=age, finding=" ".join(lines[1:]))


def fold_of(stem: str) -> int:
  """A stable fold in [0, 10) from the SHA-1 of the file stem (as retrain.py)."""
  return int(hashlib.sha1(stem.encode("utf-8")).hexdigest(), 16) % NUM_FOLDS


def split_of(stem: str) -> str:
  """Returns the split of a file stem: train (folds 0-6), validation (7) or test (8-9)."""
  return _SPLIT_OF_FOLD[fold_of(stem)]


def find_sources(root: str) -> tuple[dict[str, str], dict[str, str]]:
  """Finds `CHNCXR_*.png` images and their readings anywhere under `root`.

  Handles every layout of the archive (`ChinaSet_AllFiles/CXR_png`, the newer
  `Shenzhen-Hospital-CXR-Set/`, or a bare folder). Returns {stem: path} for
  images and for readings. A `CHNCXR_*` file that is neither is an error.
  """
  images, readings = {}, {}
  for folder, _, files in tf.io.gfile.walk(root):
    if "__MACOSX" in folder:
      continue
    for name in files:
      path = os.path.join(folder, name)
      stem, ext = os.path.splitext(name)
      if not name.startswith("CHNCXR_") or _MASK_RE.match(name):
        continue
      if ext.lower() == ".txt":
        readings[stem] = path
        continue
      label_of(path)  # Raises for a bad suffix or extension.
      if stem in images:
        raise ValueError(f"{path}: the same image is also at {images[stem]}; keep only one.")
      images[stem] = path
  return images, readings


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for the Shenzhen TB chest X-ray set."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    ShenzhenConfig(name="original", description="Source pixels, not resized."),
    ShenzhenConfig(name="512", description="Longest side 512 px, aspect ratio kept.", max_side=512),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download ChinaSet_AllFiles.zip from {_HOMEPAGE} (or {_URL}) and
  put it in the manual dir, as the zip or extracted: the `ChinaSet_AllFiles/`
  tree, the newer `Shenzhen-Hospital-CXR-Set/` tree, or a bare folder of
  `CHNCXR_*.png` files (with `CHNCXR_*.txt` readings beside them, optional).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(
            shape=(None, None, 1), dtype=np.uint8, encoding_format="png"
          ),
          "image/filename": tfds.features.Text(),
          "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
          "patient_id": np.int32,
          "sex": tfds.features.ClassLabel(names=["female", "male", "unknown"]),
          "age": np.int32,
          "finding": tfds.features.Text(),
          "fold": np.int32,
        }
      ),
      supervised_keys=("image", "label"),
      homepage=_HOMEPAGE,
    )

  def _source_root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    """The manual dir when given or filled, else the downloaded archive."""
    default_manual = dl_manager.download_dir / "manual"
    # TFDS exposes no public way to ask whether --manual_dir was given.
    given = getattr(dl_manager, "_manual_dir", None)
    if given is not None and epath.Path(given) != default_manual:
      root = dl_manager.manual_dir  # Raises naming the dir if missing or empty.
    elif default_manual.exists() and any(default_manual.iterdir()):
      root = default_manual
    else:
      return dl_manager.download_and_extract(_URL)
    if not find_sources(os.fspath(root))[0]:
      zips = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip")
      if not zips:
        raise FileNotFoundError(
          f"No CHNCXR_*.png images or .zip archive in the manual dir {root}."
          f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
      root = dl_manager.extract(zips[0])
    return root

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    images, readings = find_sources(os.fspath(self._source_root(dl_manager)))
    if not images:
      raise FileNotFoundError(f"No CHNCXR_*.png images found.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    logging.info("Found %d images and %d readings.", len(images), len(readings))
    by_split = {name: [] for name in dict.fromkeys(_SPLIT_OF_FOLD)}
    for stem in sorted(images):
      by_split[split_of(stem)].append((stem, images[stem], readings.get(stem)))
    return {name: self._generate_examples(items) for name, items in by_split.items()}

  def _example(self, item):
    stem, path, reading_path = item
    with tf.io.gfile.GFile(path, "rb") as f:
      image = image_codec.normalise_png(f.read(), path, self.builder_config.max_side)
    reading = Reading()
    if reading_path:
      with tf.io.gfile.GFile(reading_path, "rb") as f:
        reading = parse_reading(f.read().decode("utf-8", errors="replace"))
    return stem, {
      "image": image,
      "image/filename": os.path.basename(path),
      "label": label_of(path),
      "patient_id": int(stem.split("_")[1]),
      "sex": reading.sex,
      "age": reading.age,
      "finding": reading.finding,
      "fold": fold_of(stem),
    }

  def _generate_examples(self, items):
    """Yields (stem, example); decoding runs in threads (TF ops drop the GIL)."""
    window = 4 * _WORKERS  # Bounded, so memory stays flat with 3000-px images.
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
      for start in range(0, len(items), window):
        yield from pool.map(self._example, items[start : start + window])
