"""What the NLM tuberculosis sets (Shenzhen, Montgomery) share, and their common builder.

Both archives name images `<PREFIX>_<4-digit id>_<0|1>.png` (suffix `_0`
normal, `_1` tuberculosis), keep a `ClinicalReadings/<stem>.txt` per image,
and ship in several layouts (the zip, its extracted tree, a bare folder). A
builder subclasses `NlmTbBuilder` and says only what differs: the prefix, the
download, how a readings file reads and any extra features.
"""

import codecs
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

NUM_FOLDS = 10
SPLIT_OF_FOLD = ["train"] * 7 + ["validation"] + ["test"] * 2
LABELS = ["normal", "abnormal"]
_WORKERS = os.cpu_count() or 1  # Read at import: TFDS tests mock `os`.


@dataclasses.dataclass(eq=False, kw_only=True)
class TbConfig(tfds.core.BuilderConfig):
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


def features(image_dtype=np.uint8, **extra) -> tfds.features.FeaturesDict:
  """The features both sets have (plus `extra`): image, label, patient, readings, fold.

  Args:
    image_dtype: the stored image's dtype (uint16 keeps 12-bit sources).
    **extra: further features, such as Montgomery's lung_mask.

  Returns:
    The FeaturesDict.
  """
  return tfds.features.FeaturesDict(
    {
      "image": tfds.features.Image(shape=(None, None, 1), dtype=image_dtype, encoding_format="png"),
      **extra,
      "image/filename": tfds.features.Text(),
      "label": tfds.features.ClassLabel(names=LABELS),
      "patient_id": np.int32,
      "sex": tfds.features.ClassLabel(names=["female", "male", "unknown"]),
      "age": np.int32,
      "finding": tfds.features.Text(),
      "fold": np.int32,
    }
  )


def values(stem: str, path: str, prefix: str, reading: Reading) -> dict:
  """The shared features' values of one image (all but the image itself).

  Args:
    stem: the canonical stem.
    path: the image file.
    prefix: the set's prefix.
    reading: its parsed readings file.

  Returns:
    {feature: value}.
  """
  return {
    "image/filename": os.path.basename(path),
    "label": label_of(path, prefix),
    "patient_id": int(stem.split("_")[1]),
    "sex": reading.sex,
    "age": reading.age,
    "finding": reading.finding,
    "fold": fold_of(stem),
  }


def label_of(filename: str, prefix: str) -> int:
  """Returns 0 (normal) or 1 (abnormal) from a `<prefix>_<id>_<0|1>.png` name.

  The prefix is matched case-insensitively: re-distributed copies lower-case it.

  Args:
    filename: a path or file name.
    prefix: the set's prefix, such as 'CHNCXR'.

  Returns:
    The label.

  Raises:
    ValueError: naming the file, for any other name.
  """
  match = re.match(rf"^{prefix}_(\d{{4}})_([01])\.png$", os.path.basename(filename), re.I)
  if not match:
    raise ValueError(
      f"{filename}: expected a name like {prefix}_0001_0.png (suffix _0 normal,"
      " _1 abnormal); rename or remove this file."
    )
  return int(match[2])


def canonical_stem(filename: str, prefix: str) -> str:
  """`chncxr_0001_0.png` -> `CHNCXR_0001_0`: keys, folds and readings use this form."""
  stem = os.path.splitext(os.path.basename(filename))[0]
  return prefix + stem[len(prefix) :]


def fold_of(stem: str) -> int:
  """A stable fold in [0, 10) from the SHA-1 of the canonical file stem (as retrain.py)."""
  return int(hashlib.sha1(stem.encode("utf-8")).hexdigest(), 16) % NUM_FOLDS


def split_of(stem: str) -> str:
  """Returns the split of a file stem: train (folds 0-6), validation (7) or test (8-9)."""
  return SPLIT_OF_FOLD[fold_of(stem)]


def decode_reading(data: bytes) -> str | None:
  """A readings file's text: UTF-8 or UTF-16 (by BOM), else Latin-1; None if binary."""
  for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                        (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
    if data.startswith(bom):
      try:
        return data.decode(encoding)
      except UnicodeDecodeError:
        return None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    text = data.decode("latin-1")  # Every byte is a character: check it looks like text.
  if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
    return None
  return text


def find_sources(
  root: str, prefix: str, skip_dirs: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, str]]:
  """Finds `<prefix>_*.png` images and their readings anywhere under `root`.

  Handles every layout of the archives (the zip's tree, a newer tree, or a
  bare folder). A `<prefix>_*` file that is neither an image nor a reading is
  an error, as are the same image twice, a patient filed as both normal and
  abnormal, and two different readings for one image.

  Args:
    root: the folder to walk.
    prefix: the set's file prefix, such as 'CHNCXR' (any case).
    skip_dirs: folder names whose files are not images (such as lung masks).

  Returns:
    {canonical stem: path} for images and for readings.
  """
  images, readings = {}, {}
  skip = ("__MACOSX", *skip_dirs)
  for folder, _, files in tf.io.gfile.walk(root):
    if any(part in skip for part in re.split(r"[\\/]", folder)):
      continue
    for name in sorted(files):
      path = os.path.join(folder, name)
      if not name.upper().startswith(prefix + "_") or name.lower().endswith("_mask.png"):
        continue  # Some releases keep lung masks beside the images.
      stem, ext = canonical_stem(name, prefix), os.path.splitext(name)[1]
      if ext.lower() == ".txt":
        if stem in readings and read_bytes(readings[stem]) != read_bytes(path):
          raise ValueError(
            f"{path}: differs from the reading at {readings[stem]}; keep only the right one."
          )
        readings.setdefault(stem, path)
        continue
      label_of(path, prefix)  # Raises for a bad suffix or extension.
      if stem in images:
        raise ValueError(f"{path}: the same image is also at {images[stem]}; keep only one.")
      images[stem] = path
  by_patient = {}
  for stem, path in sorted(images.items()):
    other = by_patient.setdefault(stem[: -len("_0")], path)
    if other != path:
      raise ValueError(
        f"{path}: the same patient is also filed as {other} with the other label;"
        " keep the file with the right label."
      )
  return images, readings


def read_bytes(path: str) -> bytes:
  """The bytes of a local or gs:// file."""
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


class NlmTbBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The common builder: finds sources in any layout, splits by hash, converts in threads.

  Subclasses set PREFIX, URL, HOMEPAGE, MANUAL_DOWNLOAD_INSTRUCTIONS and
  `_info`, and implement `_features` (one example's features).
  """

  PREFIX = ""
  URL = ""
  SKIP_DIRS: tuple[str, ...] = ()

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
      return dl_manager.download_and_extract(self.URL)
    if not self._find(root)[0]:
      zips = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip")
      if not zips:
        raise FileNotFoundError(
          f"No {self.PREFIX}_*.png images or .zip archive in the manual dir {root}."
          f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
      root = dl_manager.extract(zips[0])
    return root

  def _find(self, root) -> tuple[dict[str, str], dict[str, str]]:
    return find_sources(os.fspath(root), self.PREFIX, self.SKIP_DIRS)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    self._root = self._source_root(dl_manager)
    images, readings = self._find(self._root)
    if not images:
      raise FileNotFoundError(
        f"No {self.PREFIX}_*.png images found.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    logging.info("Found %d images and %d readings.", len(images), len(readings))
    unreadable = [stem for stem in images if stem in readings and _text(readings[stem]) is None]
    if unreadable:
      logging.warning(
        "%d readings file(s) are not text (UTF-8, UTF-16 or Latin-1), e.g. %s: their sex, age"
        " and finding are stored as unknown.",
        len(unreadable),
        readings[unreadable[0]],
      )
    by_split = {name: [] for name in dict.fromkeys(SPLIT_OF_FOLD)}
    for stem in sorted(images):
      by_split[split_of(stem)].append((stem, images[stem], readings.get(stem)))
    return {name: self._generate_examples(items) for name, items in by_split.items()}

  def _image(self, data: bytes, path: str):
    """The stored image: 8-bit grayscale PNG bytes, resized to the config's max_side."""
    return image_codec.normalise_png(data, path, self.builder_config.max_side)

  def _features(self, stem: str, path: str, image, reading: str | None) -> dict:
    """One example's features; `reading` is the readings file's text or None."""
    raise NotImplementedError

  def _example(self, item):
    stem, path, reading_path = item
    image = self._image(read_bytes(path), path)
    return stem, self._features(stem, path, image, reading_path and _text(reading_path))

  def _generate_examples(self, items):
    """Yields (stem, example); decoding runs in threads (TF ops drop the GIL)."""
    window = 4 * _WORKERS  # Bounded, so memory stays flat with 3000-px images.
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
      for start in range(0, len(items), window):
        yield from pool.map(self._example, items[start : start + window])


def _text(path: str) -> str | None:
  return decode_reading(read_bytes(path))
