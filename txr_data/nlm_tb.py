"""What the NLM tuberculosis sets (Shenzhen, Montgomery) share, and their common builder.

Both archives name images `<PREFIX>_<4-digit id>_<0|1>.png` (suffix `_0`
normal, `_1` tuberculosis), keep a `ClinicalReadings/<stem>.txt` per image,
and ship in several layouts (the zip, its extracted tree, a bare folder). A
builder subclasses `NlmTbBuilder` and says only what differs: its constants
(the prefix, the download), how a readings file reads and any extra features.
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

HOMEPAGE = "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets"
NUM_FOLDS = 10
SPLIT_OF_FOLD = ["train"] * 7 + ["validation"] + ["test"] * 2
LABELS = ["normal", "abnormal"]
# An age beyond this is a typo, not a person's (and 2**31 does not fit int32).
MAX_AGE = 150
# Folders (any case) whose files are never source images: lung and lesion masks,
# annotations (the newer Shenzhen release's Annotations/masks/, mask/) and macOS junk.
SKIP_DIRS = ("__macosx", "mask", "masks", "annotations")
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
  """The features both sets have (plus `extra`): image, label, patient, subject, readings, fold.

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
      "subject": tfds.features.Text(),
      "sex": tfds.features.ClassLabel(names=["female", "male", "unknown"]),
      "age": np.int32,
      "finding": tfds.features.Text(),
      "fold": np.int32,
    }
  )


def values(stem: str, path: str, prefix: str, reading: Reading, subject: str) -> dict:
  """The shared features' values of one image (all but the image itself).

  Args:
    stem: the canonical stem.
    path: the image file.
    prefix: the set's prefix.
    reading: its parsed readings file.
    subject: the canonical stem of the patient's first film (see `subjects_of`).

  Returns:
    {feature: value}.
  """
  return {
    "image/filename": os.path.basename(path),
    "label": label_of(path, prefix),
    "patient_id": int(stem.split("_")[1]),
    "subject": subject,
    "sex": reading.sex,
    "age": reading.age,
    "finding": reading.finding,
    "fold": fold_of(subject),
  }


def age_or_unknown(years: int) -> int:
  """`years` if it can be a person's age (0 to MAX_AGE), else -1 (unknown)."""
  return years if 0 <= years <= MAX_AGE else -1


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


def fold_of(subject: str) -> int:
  """A stable fold in [0, 10) from the SHA-1 of a subject key (a canonical file stem)."""
  return int(hashlib.sha1(subject.encode("utf-8")).hexdigest(), 16) % NUM_FOLDS


def split_of(subject: str) -> str:
  """Returns the split of a subject key: train (folds 0-6), validation (7) or test (8-9)."""
  return SPLIT_OF_FOLD[fold_of(subject)]


def split_by_subject(items: list, subject_of, root) -> dict[str, list]:
  """{split: its items, in order} by each item's subject (`split_of`), every split filled.

  Args:
    items: a builder's images, in the order to write them.
    subject_of: an item's subject key.
    root: the source folder, for the error.

  Raises:
    ValueError: a split that no item falls in (TFDS would fail with a bare AssertionError).
  """
  by_split = {name: [] for name in dict.fromkeys(SPLIT_OF_FOLD)}
  for item in items:
    by_split[split_of(subject_of(item))].append(item)
  for split, members in by_split.items():
    if not members:
      raise ValueError(
        f"No image of the {len(items)} under {root} falls in the {split} split: a patient's"
        " split is a hash of their subject (70/10/20), so a few images can miss a split. Add"
        " images (the whole archive fills every split)."
      )
  return by_split


def subjects_of(
  stems, texts: dict[str, str | None], prefix: str, known: dict[str, str]
) -> dict[str, str]:
  """Each film's subject key: the lowest canonical stem among the films of its patient.

  Films are linked when a reading says "same pt as <PREFIX>_<id>_<0|1>" (as
  Montgomery's do) or `known` (a builder's documented repeats, for readings
  that are silent) pairs them; links chain. The key may name a film that is
  not in this copy, so a film's subject never depends on which others exist.

  Args:
    stems: the canonical stems of the images.
    texts: {stem: readings text or None}.
    prefix: the set's prefix.
    known: {stem: stem of another film of the same patient}.

  Returns:
    {stem: subject key}.
  """
  first = {}  # Union-find: each film points towards the lowest stem of its patient.

  def root(stem):
    while first.get(stem, stem) != stem:
      stem = first[stem]
    return stem

  links = list(known.items())
  pattern = re.compile(rf"same\s+(?:pt|patient)\s+as\s+({prefix}_\d{{4}}_[01])\b", re.I)
  for stem, text in sorted(texts.items()):
    links += [(stem, canonical_stem(ref, prefix)) for ref in pattern.findall(text or "")]
  for a, b in links:
    a, b = root(a), root(b)
    first[max(a, b)] = min(a, b)
  return {stem: root(stem) for stem in stems}


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


def _listdir(folder: str, prefix: str) -> list[str]:
  """The entries of `folder`, without file names that are not UTF-8 (no source has one).

  Raises:
    ValueError: naming the folder, when it cannot be listed, or naming the
      file, for a `<prefix>_*` name that is not UTF-8.
  """
  try:
    return [name.rstrip("/") for name in tf.io.gfile.listdir(folder)]
  except tf.errors.OpError as e:
    raise ValueError(
      f"{folder}: cannot list this folder ({e.message}); make it readable or move it out of"
      " the source folder."
    ) from e
  except UnicodeDecodeError:  # TF decodes names as UTF-8; only a local disk has others.
    pass
  names, bad = [], []
  for raw in os.listdir(os.fsencode(folder)):
    try:
      names.append(raw.decode("utf-8"))
    except UnicodeDecodeError:
      if raw.upper().startswith(prefix.encode() + b"_"):
        raise ValueError(
          f"{os.path.join(folder, os.fsdecode(raw))}: the file name is not UTF-8; rename it"
          f" {prefix}_<4-digit id>_<0|1>.png (or .txt)."
        ) from None
      bad.append(raw)
  logging.warning(
    "%s: skipped %d file name(s) that are not UTF-8 and so not source files, e.g. %r.",
    folder, len(bad), bad[0],
  )  # fmt: skip
  return names


def walk(root: str, prefix: str, skip_dirs: tuple[str, ...] = SKIP_DIRS):
  """Yields (folder, sorted file names) under `root`, skipping folders named in `skip_dirs`.

  Unlike `tf.io.gfile.walk`, it names a folder it cannot list instead of
  failing without a name, skips file names that are not UTF-8, and visits
  each real folder once, so a symlink loop cannot hang the build.

  Args:
    root: the folder to walk (local or gs://).
    prefix: the set's file prefix, for `_listdir`'s error.
    skip_dirs: lower-case names of folders (below `root`) not to enter.
  """
  pending, seen = [root], set()
  while pending:
    folder = pending.pop()
    real = folder if "://" in folder else os.path.realpath(folder)
    if real in seen:
      continue
    seen.add(real)
    files, subdirs = [], []
    for name in sorted(_listdir(folder, prefix)):
      path = os.path.join(folder, name)
      if not tf.io.gfile.isdir(path):
        files.append(name)
      elif name.lower() not in skip_dirs:
        subdirs.append(path)
    yield folder, files
    pending += reversed(subdirs)


def find_sources(
  root: str, prefix: str, skip_dirs: tuple[str, ...] = SKIP_DIRS
) -> tuple[dict[str, str], dict[str, str]]:
  """Finds `<prefix>_*.png` images and their readings anywhere under `root`.

  Handles every layout of the archives (the zip's tree, a newer tree, or a
  bare folder). Mask and annotation folders (`skip_dirs`) are not entered and
  `.json` annotation files are ignored. Another `<prefix>_*` file that is
  neither an image nor a reading is an error, as are the same image twice, a
  patient filed as both normal and abnormal, and two different readings for
  one image.

  Args:
    root: the folder to walk.
    prefix: the set's file prefix, such as 'CHNCXR' (any case).
    skip_dirs: lower-case names of folders whose files are not images.

  Returns:
    {canonical stem: path} for images and for readings.
  """
  images, readings = {}, {}
  for folder, files in walk(root, prefix, skip_dirs):
    for name in files:
      path = os.path.join(folder, name)
      if not name.upper().startswith(prefix + "_") or name.lower().endswith(("_mask.png", ".json")):
        continue  # Some releases keep lung masks and annotations beside the images.
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
  """The common builder: finds sources in any layout, splits by subject, converts in threads.

  A subclass sets its constants (PREFIX, URL, VERSION, BUILDER_CONFIGS,
  MANUAL_DOWNLOAD_INSTRUCTIONS, and SOURCE_DTYPE, SKIP_DIRS or KNOWN_REPEATS
  where they differ) and `_parse_reading`; a set with more to store adds it
  through `_extra_features` and `_extra_example`.
  """

  PREFIX = ""
  URL = ""
  # The stored image's dtype in a config that keeps the source pixels (max_side None).
  SOURCE_DTYPE = np.uint8
  SKIP_DIRS: tuple[str, ...] = SKIP_DIRS
  # {film: another film of the same patient}, where the readings do not say so.
  KNOWN_REPEATS: dict[str, str] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    dtype = self.SOURCE_DTYPE if self.builder_config.max_side is None else np.uint8
    return self.dataset_info_from_configs(
      features=features(dtype, **self._extra_features()),
      supervised_keys=("image", "label"),
      homepage=HOMEPAGE,
    )

  def _extra_features(self) -> dict:
    """Features beyond the shared ones ({name: feature}); `_extra_example` gives their values."""
    return {}

  def _extra_example(self, stem: str, info: image_codec.PngInfo) -> dict:
    """The values of `_extra_features` for one image, from its canonical stem and PNG header."""
    return {}

  def _parse_reading(self, text: str) -> Reading:
    """A readings file's text, parsed."""
    raise NotImplementedError

  def _sources(
    self, dl_manager: tfds.download.DownloadManager
  ) -> tuple[epath.Path, tuple[dict[str, str], dict[str, str]]]:
    """The source folder and its (images, readings) (see `find_sources`), each found once.

    The folder is the manual dir when given or filled (or the first .zip in
    it, extracted, when it holds no images), else the downloaded archive.
    """
    default_manual = dl_manager.download_dir / "manual"
    # TFDS exposes no public way to ask whether --manual_dir was given.
    given = getattr(dl_manager, "_manual_dir", None)
    if given is not None and epath.Path(given) != default_manual:
      root = dl_manager.manual_dir  # Raises naming the dir if missing or empty.
    elif default_manual.exists() and any(default_manual.iterdir()):
      root = default_manual
    else:
      root = dl_manager.download_and_extract(self.URL)
      return root, self._find(root)
    found = self._find(root)
    if not found[0]:
      zips = sorted(p for p in root.iterdir() if p.suffix.lower() == ".zip")
      if not zips:
        raise FileNotFoundError(
          f"No {self.PREFIX}_*.png images or .zip archive in the manual dir {root}."
          f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
      root = dl_manager.extract(zips[0])
      found = self._find(root)
    return root, found

  def _find(self, root) -> tuple[dict[str, str], dict[str, str]]:
    return find_sources(os.fspath(root), self.PREFIX, self.SKIP_DIRS)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root, (images, readings) = self._sources(dl_manager)
    if not images:
      raise FileNotFoundError(
        f"No {self.PREFIX}_*.png images found.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    logging.info("Found %d images and %d readings.", len(images), len(readings))
    texts = {stem: _text(readings[stem]) if stem in readings else None for stem in images}
    unreadable = [stem for stem, text in texts.items() if stem in readings and text is None]
    if unreadable:
      logging.warning(
        "%d readings file(s) are not text (UTF-8, UTF-16 or Latin-1), e.g. %s: their sex, age"
        " and finding are stored as unknown.",
        len(unreadable),
        readings[unreadable[0]],
      )
    subjects = subjects_of(images, texts, self.PREFIX, self.KNOWN_REPEATS)
    parsed = {stem: Reading() if text is None else self._parse_reading(text)
              for stem, text in texts.items()}  # fmt: skip
    items = [(stem, images[stem], parsed[stem], subjects[stem]) for stem in sorted(images)]
    by_split = split_by_subject(items, lambda item: item[3], root)
    for split, items in by_split.items():
      readings_of = [reading for _, _, reading, _ in items]
      logging.info(
        "%s: %d images; sex unknown for %d, age unknown for %d (%d without a readings file).",
        split,
        len(items),
        sum(r.sex == "unknown" for r in readings_of),
        sum(r.age < 0 for r in readings_of),
        sum(stem not in readings for stem, _, _, _ in items),
      )
    return {name: self._generate_examples(items) for name, items in by_split.items()}

  def _image(self, data: bytes, path: str, info: image_codec.PngInfo) -> bytes:
    """The stored image: 8-bit grayscale PNG bytes, resized to the config's max_side."""
    return image_codec.normalise_png(data, path, self.builder_config.max_side, info)

  def _example(self, item):
    stem, path, reading, subject = item
    data = read_bytes(path)
    info = image_codec.png_info(data, path)
    return stem, {
      "image": self._image(data, path, info),
      **self._extra_example(stem, info),
      **values(stem, path, self.PREFIX, reading, subject),
    }

  def _generate_examples(self, items):
    """Yields (stem, example); decoding runs in threads (TF ops drop the GIL)."""
    window = 4 * _WORKERS  # Bounded, so memory stays flat with 3000-px images.
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
      for start in range(0, len(items), window):
        yield from pool.map(self._example, items[start : start + window])


def _text(path: str) -> str | None:
  return decode_reading(read_bytes(path))
