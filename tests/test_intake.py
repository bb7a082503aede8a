"""Intake checks: DICOM films a screening model was not made for are refused, with the reason."""

from conftest import dicom_bytes
import numpy as np
import pytest

from txr_lite import intake

PIXELS = np.zeros((40, 40), np.uint16)


@pytest.mark.parametrize(
  "tags,reason",
  [
    ({"PatientAge": "008Y"}, "refused (under the minimum age): patient aged 8"),
    ({"PatientAge": "018M"}, "refused (under the minimum age): patient aged 1"),
    ({"ViewPosition": "LL"}, "refused (lateral view): ViewPosition LL"),
    ({"Modality": "CT"}, "refused (not a radiograph): Modality CT"),
    ({"BodyPartExamined": "SKULL"}, "refused (not a chest): BodyPartExamined SKULL"),
  ],
)
def test_each_refusal_names_its_tag(tags, reason):
  assert intake.refusal(dicom_bytes(PIXELS, **tags)).startswith(reason)


def test_a_frontal_adult_chest_film_and_missing_tags_pass():
  adult = dicom_bytes(PIXELS, PatientAge="045Y", ViewPosition="PA", BodyPartExamined="CHEST")
  assert intake.refusal(adult) is None
  assert intake.refusal(dicom_bytes(PIXELS)) is None  # no tag: nothing to check
  assert intake.refusal(dicom_bytes(PIXELS, PatientAge="008Y"), min_age=0) is None
  assert intake.refusal(dicom_bytes(PIXELS, PatientAge="015Y")) is None


def test_ages():
  assert [intake.age_years(v) for v in ("045Y", "018M", "003W", "400D", "45", "", "x")] == [
    45, 1, 0, 1, 45, None, None,
  ]  # fmt: skip
