"""montgomery_cxr: the NLM Montgomery County tuberculosis chest X-ray set, with lung masks."""

import os
import re

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from txr_data import geometry
from txr_data import image_codec
from txr_data import nlm_tb

PREFIX = "MCUCXR"
MASK_SIDES = ("leftMask", "rightMask")  # Folders under ManualMask/, one binary PNG per image.
# "Patient's Sex: F" / "Patient's Age: 045Y" (DICOM tags), in any order; the rest is the finding.
_FIELD_RE = re.compile(r"^patient\W?s?\s+(sex|age)\s*[:=]?\s*(.*)$", re.IGNORECASE)
_SEX_RE = re.compile(r"^(female|male|f|m)\b", re.IGNORECASE)  # 'O' (other) is unknown.
_AGE_RE = re.compile(r"^(\d+)\s*([a-z]*)\.?$", re.IGNORECASE)
_COLOURS = {0: "a grayscale", 2: "an RGB", 3: "a palette", 4: "a grayscale+alpha", 6: "an RGBA"}
# Films of one patient: {film: that patient's first film}. MCUCXR_0117_1's reading says "(same pt
# as MCUCXR_0113_1)" and MCUCXR_0166_1's "NO REPORT (same pt as MCUCXR_0162_1)"; they are listed
# too so that a copy without readings splits alike. MCUCXR_0170_1's reading says no such thing,
# but a public inventory of the set groups it with 0162_1 and 0166_1 (same sex and age, and it
# mentions prior views 1 and 2 months before): probably the same patient, so it is kept with
# them, which costs nothing if it is not and keeps a test patient out of train if it is.
KNOWN_REPEATS = {
  "MCUCXR_0117_1": "MCUCXR_0113_1",
  "MCUCXR_0166_1": "MCUCXR_0162_1",
  "MCUCXR_0170_1": "MCUCXR_0162_1",
}


def label_of(filename: str) -> int:
  """Returns 0 (normal) or 1 (abnormal) from a `MCUCXR_<id>_<0|1>.png` name."""
  return nlm_tb.label_of(filename, PREFIX)


def _age(value: str) -> int:
  """Years from a DICOM age ('045Y', '010M', '003W', '012D') or a bare number; -1 if unknown."""
  match = _AGE_RE.match(value.strip())
  if not match:
    return -1
  unit = match[2][:1].lower()
  if unit in ("", "y"):
    return nlm_tb.age_or_unknown(int(match[1]))
  return 0 if unit in ("m", "w", "d") else -1  # Infants (months, weeks, days) are 0 years old.


def parse_reading(text: str) -> nlm_tb.Reading:
  """Parses a Montgomery ClinicalReadings file.

  The archive's files read "Patient's Sex: F", "Patient's Age: 045Y", then the
  radiologist's finding ("normal", or a description of the TB findings). Sex
  F/M (or Female/Male) is parsed, anything else ('O') is unknown; an age in
  months, weeks or days is 0 years; what cannot be parsed is left unknown.

  Args:
    text: the file's text.

  Returns:
    The sex, age in years (-1 if unknown) and the finding: every other
    non-empty line, joined by spaces.
  """
  sex, age, finding = "unknown", -1, []
  for line in text.replace("\r", "\n").split("\n"):
    line = line.strip()
    field = _FIELD_RE.match(line)
    if field is None:
      if line:
        finding.append(line)
    elif field[1].lower() == "sex":
      value = _SEX_RE.match(field[2])
      sex = {"f": "female", "m": "male"}[value[1][0].lower()] if value else "unknown"
    else:
      age = _age(field[2])
  return nlm_tb.Reading(sex=sex, age=age, finding=" ".join(finding))


def find_masks(root: str) -> dict[str, dict[str, str]]:
  """Finds lung masks: `<prefix>_*.png` files in `leftMask/` and `rightMask/` folders.

  Folder names and the prefix match in any case, as image names do.

  Args:
    root: the folder to walk.

  Returns:
    {canonical stem: {'leftMask' or 'rightMask': path}}.

  Raises:
    ValueError: naming the file, for a badly named mask or the same mask twice.
  """
  sides = {side.lower(): side for side in MASK_SIDES}
  masks = {}
  for folder, files in nlm_tb.walk(root, PREFIX, ("__macosx",)):
    side = sides.get(os.path.basename(folder.rstrip("/\\")).lower())
    if side is None:
      continue
    for name in files:
      if not name.upper().startswith(PREFIX + "_"):
        continue
      path = os.path.join(folder, name)
      label_of(path)  # Raises for a bad suffix or extension.
      other = masks.setdefault(nlm_tb.canonical_stem(name, PREFIX), {}).setdefault(side, path)
      if other != path:
        raise ValueError(f"{path}: the same {side} is also at {other}; keep only one.")
  return masks


def _read_mask(path: str, size: tuple[int, int]) -> tf.Tensor:
  """A mask file as a bool [height, width, 1] tensor; its size must be `size`."""
  data = nlm_tb.read_bytes(path)
  info = image_codec.png_info(data, path)
  if (info.height, info.width) != size:
    raise image_codec.BadImageError(
      f"{path}: a {info.width} x {info.height} mask for a {size[1]} x {size[0]} image;"
      " a mask must have its image's size."
    )
  try:
    mask = image_codec.to_grayscale(data, info)
  except tf.errors.OpError as e:
    raise image_codec.BadImageError(f"{path}: cannot decode PNG ({e.message}); re-copy it.") from e
  peak = tf.reduce_max(mask)  # 255 in the archive's masks, 1 in some copies'.
  if not bool(tf.reduce_all((mask == 0) | (mask == peak))):
    raise image_codec.BadImageError(
      f"{path}: not a binary mask (values other than 0 and {int(peak)}); restore the archive's"
      " 0/255 mask."
    )
  return mask > 0


class Builder(nlm_tb.NlmTbBuilder):
  """DatasetBuilder for the Montgomery County TB chest X-ray set."""

  PREFIX = PREFIX
  URL = "http://openi.nlm.nih.gov/imgs/collections/NLM-MontgomeryCXRSet.zip"
  SOURCE_DTYPE = np.uint16  # The archive's 12-bit data, stored unchanged by `original`.
  # Masks share their image's file name: not images. Folder names match in any case.
  SKIP_DIRS = (*nlm_tb.SKIP_DIRS, "manualmask", *(side.lower() for side in MASK_SIDES))
  KNOWN_REPEATS = KNOWN_REPEATS

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "2.0.0": "Splits by patient: a `subject` feature (the patient's first film, from 'same pt"
    " as' in the readings and KNOWN_REPEATS) sets fold and split, so MCUCXR_0166_1 and"
    " MCUCXR_0170_1 join MCUCXR_0162_1 in test (real counts: train 96, validation 10, test 32)."
    " Non-binary masks refused; EXIF orientation applied to the image and its masks.",
  }
  BUILDER_CONFIGS = [
    nlm_tb.TbConfig(
      name="original", description="Source pixels: 12-bit data as uint16, full size."
    ),
    nlm_tb.TbConfig(
      name="512", description="8-bit, longest side 512 px, aspect ratio kept.", max_side=512
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download NLM-MontgomeryCXRSet.zip from {nlm_tb.HOMEPAGE} (or {URL}) and
  put it in the manual dir, as the zip or extracted: the `MontgomerySet/` tree
  (CXR_png/, ClinicalReadings/, ManualMask/leftMask/ and rightMask/), or a bare
  folder of `MCUCXR_*.png` files (with `MCUCXR_*.txt` readings beside them and
  leftMask/ and rightMask/ folders, both optional).
  """

  _parse_reading = staticmethod(parse_reading)

  def _find(self, root):
    images, readings = super()._find(root)
    self._masks = find_masks(os.fspath(root))
    for stem in sorted(images):
      sides = self._masks.get(stem, {})
      if len(sides) == 1:
        ((side, path),) = sides.items()
        missing = MASK_SIDES[1 - MASK_SIDES.index(side)]
        raise ValueError(
          f"{path}: this image's {missing} is missing; restore it, or remove both masks."
        )
    unmasked = [stem for stem in sorted(images) if stem not in self._masks]
    if unmasked:
      logging.warning(
        "%d image(s) have no lung masks (no leftMask/ or rightMask/ file), e.g. %s: their"
        " lung_mask is stored all zero.",
        len(unmasked),
        unmasked[0],
      )
    return images, readings

  def _image(self, data: bytes, path: str, info: image_codec.PngInfo) -> bytes:
    """The stored image: 8-bit as the base stores it for a max_side config, else the 16-bit source.

    The source is stored unchanged, but upright (an oriented one re-encoded with
    its sBIT depth).
    """
    if self.builder_config.max_side is not None:
      return super()._image(data, path, info)
    if (info.color_type, info.bit_depth) != (0, 16):  # Colour type 0: grayscale.
      raise image_codec.BadImageError(
        f"{path}: {_COLOURS.get(info.color_type, 'an unknown colour type')} PNG with"
        f" {info.bit_depth}-bit samples; the archive's images are 16-bit grayscale, which the"
        " `original` config stores unchanged. Use the original archive, or the `512` config,"
        " which converts."
      )
    if info.orientation != 1:  # Stored upright, as serving reads it.
      image = tf.io.decode_png(data, channels=1, dtype=tf.uint16)
      data = tf.io.encode_png(geometry.orient(image, info.orientation)).numpy()
      if info.significant_bits:
        data = image_codec.with_significant_bits(data, info.significant_bits)
    return data

  def _extra_features(self) -> dict:
    return {
      "lung_mask": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png")
    }

  def _extra_example(self, stem: str, info: image_codec.PngInfo) -> dict:
    """The lung mask: the union of the left and right masks as a 0/1 PNG, shaped as the image.

    The masks have the source's size; they get its orientation and resize.
    """
    union = tf.zeros([info.height, info.width, 1], tf.bool)
    for path in self._masks.get(stem, {}).values():
      union |= _read_mask(path, (info.height, info.width))
    mask = geometry.orient(tf.cast(union, tf.uint8) * 255, info.orientation)
    if self.builder_config.max_side is not None:
      mask = geometry.shrink(mask, self.builder_config.max_side)  # Area, then threshold.
    return {"lung_mask": tf.io.encode_png(tf.cast(mask >= 128, tf.uint8)).numpy()}
