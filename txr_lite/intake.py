"""Intake checks: the DICOM films a TB screening model was not made for, refused before scoring.

WHO's recommendation on computer-aided detection covers people aged 15 and
over, and the tools programmes use return a code, never a score, for a film
that is not a frontal chest radiograph or a patient under their minimum age.
Both predictors apply these to DICOM files (where the tags exist); PNG and
JPEG carry no such tags, so nothing is checked for them. Standard library and
pydicom only.
"""

import io
import re

from txr_lite import dicom

MIN_AGE = 15  # WHO's recommendation on CAD for TB covers people aged 15 and over.
RADIOGRAPHY = ("CR", "DX", "DR")  # Computed and digital radiography (DR: a legacy term).
LATERAL = ("LL", "RL", "LAT", "LATERAL", "RLD", "LLD")
CHEST = ("CHEST", "THORAX", "LUNG")
_AGE = re.compile(r"^(\d{1,3})\s*([YMWD]?)$", re.I)
DAYS = {"Y": 365, "M": 30, "W": 7, "D": 1}
REFUSED = "refused ("  # Every intake refusal starts so: "refused (<reason>): <details>".


def age_years(value: str) -> int | None:
  """Whole years from DICOM's PatientAge ('045Y', '018M', '003W', '010D') or plain '45'.

  Returns:
    The age, or None for an empty or unreadable value.
  """
  match = _AGE.match(str(value).strip())
  if not match:
    return None
  number, unit = int(match[1]), match[2].upper() or "Y"
  return number if unit == "Y" else number * DAYS[unit] // 365


def refusal(data: bytes, min_age: int = MIN_AGE) -> str | None:
  """Why a DICOM film must not be scored, or None (a tag that is absent checks nothing).

  Args:
    data: the DICOM file's bytes.
    min_age: the youngest age scored; 0 switches the age check off.

  Returns:
    The reason, for the error column.

  Raises:
    ValueError: without pydicom, saying how to install it (`dicom.INSTALL`), as
      reading the pixels would: the checks come first.
  """
  try:
    import pydicom
  except ImportError:
    raise ValueError(dicom.INSTALL) from None

  try:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
  except Exception:  # noqa: BLE001  (the pixel reader names a file pydicom cannot read)
    return None
  age = age_years(ds.get("PatientAge", "") or "")
  if min_age and age is not None and age < min_age:
    return (
      f"{REFUSED}under the minimum age): patient aged {age} (PatientAge {ds.PatientAge}),"
      f" under --min_age={min_age} (WHO's recommendation on CAD covers people aged 15 and over)"
    )
  view = str(ds.get("ViewPosition", "") or "").strip().upper()
  if view in LATERAL:
    return f"{REFUSED}lateral view): ViewPosition {view}; score frontal (PA or AP) films only"
  modality = str(ds.get("Modality", "") or "").strip().upper()
  if modality and modality not in RADIOGRAPHY:
    return f"{REFUSED}not a radiograph): Modality {modality}, not {', '.join(RADIOGRAPHY)}"
  part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
  if part and part not in CHEST:
    return f"{REFUSED}not a chest): BodyPartExamined {part}"
  return None
