"""shenzhen_cxr: the NLM Shenzhen Hospital tuberculosis chest X-ray set."""

import re

import tensorflow_datasets as tfds

from txr_data import nlm_tb

PREFIX = "CHNCXR"
_READING_RE = re.compile(
  r"^\s*(?:(?P<sex>female|male|f|m)(?![a-z]))?[\s,;:]*"
  r"(?:(?P<age>\d+)\s*(?P<unit>[a-z]*))?",
  re.IGNORECASE,
)


def label_of(filename: str) -> int:
  """Returns 0 (normal) or 1 (abnormal) from a `CHNCXR_<id>_<0|1>.png` name."""
  return nlm_tb.label_of(filename, PREFIX)


def find_sources(root: str) -> tuple[dict[str, str], dict[str, str]]:
  """Finds `CHNCXR_*.png` images and their readings under `root` (see nlm_tb.find_sources)."""
  return nlm_tb.find_sources(root, PREFIX)


def parse_reading(text: str) -> nlm_tb.Reading:
  """Parses a ClinicalReadings file: sex and age on line 1, the finding after.

  The first line varies in the archive ('male 35yrs', 'Male,35yr',
  'female 25', 'O' for unknown); what cannot be parsed is left unknown.
  """
  lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
  lines = [line for line in lines if line]
  if not lines:
    return nlm_tb.Reading()
  match = _READING_RE.match(lines[0])
  sex = {"f": "female", "m": "male"}.get((match["sex"] or "u")[0].lower(), "unknown")
  age = -1
  if match["age"]:
    # Infants are recorded in months or days: they are 0 years old.
    age = 0 if match["unit"].lower().startswith(("m", "d")) else int(match["age"])
    age = nlm_tb.age_or_unknown(age)
  return nlm_tb.Reading(sex=sex, age=age, finding=" ".join(lines[1:]))


class Builder(nlm_tb.NlmTbBuilder):
  """DatasetBuilder for the Shenzhen TB chest X-ray set."""

  PREFIX = PREFIX
  URL = "https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip"

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": "A `subject` feature: the patient's first film (from 'same pt as' in a reading);"
    " fold and split come from it. EXIF orientation applied; 16-bit gray+alpha and RGBA read"
    " by their data, not their alpha; mask and annotation folders of the newer release skipped.",
  }
  BUILDER_CONFIGS = [
    nlm_tb.TbConfig(name="original", description="Source pixels, not resized."),
    nlm_tb.TbConfig(
      name="512", description="Longest side 512 px, aspect ratio kept.", max_side=512
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download ChinaSet_AllFiles.zip from {nlm_tb.HOMEPAGE} (or {URL}) and
  put it in the manual dir, as the zip or extracted: the `ChinaSet_AllFiles/`
  tree, the newer `Shenzhen-Hospital-CXR-Set/` tree, or a bare folder of
  `CHNCXR_*.png` files (with `CHNCXR_*.txt` readings beside them, optional).
  """

  _parse_reading = staticmethod(parse_reading)
