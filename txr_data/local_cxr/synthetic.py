"""Synthetic sets in a site's layouts, for the README's walk-through, tests and benchmarks.

The images are the Shenzhen generator's (`shenzhen_cxr.synthetic.chest_xray`);
what this adds is how a programme stores them: study-ID names with a
labels.csv, class folders, or `_0`/`_1` names; PNG, JPEG or DICOM (with the
patient's tags); some patients with two films; a few children and lateral
views, as a screening day brings. Writing DICOM needs pydicom (the `dicom` extra).
"""

import csv
import io
import os
import shutil

import numpy as np
import tensorflow as tf

from txr_data.local_cxr import films
from txr_data.shenzhen_cxr import synthetic

FORMATS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
SITES = ("clinic_a", "clinic_b")


def dicom_bytes(pixels: np.ndarray, **attributes) -> bytes:
  """A single-frame grayscale DICOM file (Digital X-Ray) of `pixels`, 12 bits stored in 16.

  Args:
    pixels: [rows, columns], values 0-4095.
    **attributes: further tags by keyword (PatientID='P1', PatientAge='045Y', ...).
  """
  import pydicom
  from pydicom.dataset import Dataset
  from pydicom.dataset import FileMetaDataset
  from pydicom.uid import ExplicitVRLittleEndian

  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
  meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Modality = "DX"
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = "MONOCHROME2"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
  ds.PixelRepresentation = 0
  for key, value in attributes.items():
    setattr(ds, key, value)
  ds.PixelData = pixels.astype(np.uint16).tobytes()
  buf = io.BytesIO()
  ds.save_as(buf, enforce_file_format=True)
  return buf.getvalue()


def _encode(pixels: np.ndarray, image_format: str, tags: dict) -> bytes:
  if image_format == "png":
    return tf.io.encode_png(pixels[..., None]).numpy()
  if image_format == "jpeg":
    return tf.io.encode_jpeg(pixels[..., None], quality=95).numpy()
  return dicom_bytes(pixels.astype(np.uint16) * 16, **tags)  # 8 bits -> 12 stored


def write_site(
  out: str,
  num_images: int,
  layout: str = "csv",
  image_format: str = "png",
  seed: int = 0,
  prevalence: float = 0.5,
  lesion_contrast: float = 0.35,
  nuisance: float = 0.0,
  height: int | None = None,
) -> list[dict]:
  """Writes a site's films under `out` (replacing it) in `layout`; returns each film's truth.

  Every tenth film is a second film of the patient before it (same label);
  ages run 5-80 (so some films are of children), views are mostly PA, a few
  AP and lateral; two sites alternate. In the csv layout the CSV carries the
  attributes, except for DICOM films, whose tags carry them (the CSV then
  has file,label only); in the other layouts only DICOM films carry them.

  Args:
    out: the manual dir to write.
    num_images: how many films.
    layout: one of films.LAYOUTS.
    image_format: 'png', 'jpeg' or 'dicom'.
    seed: the random seed; the output is a function of the arguments.
    prevalence: the share of abnormal patients (rounded to whole patients).
    lesion_contrast: see `shenzhen_cxr.synthetic.chest_xray`.
    nuisance: see `shenzhen_cxr.synthetic.chest_xray`.
    height: the films' height in px (default 100-128).

  Returns:
    One dict per film: file (under `out`), label, subject, sex, age, site,
    date, view.
  """
  if layout not in films.LAYOUTS or image_format not in FORMATS:
    raise ValueError(f"layout {layout!r} or format {image_format!r} unknown")
  rng = np.random.default_rng(seed)
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  truth, label, subject = [], 0, ""
  for i in range(num_images):
    if i % 10 != 9 or not subject:  # A new patient.
      subject = f"P{i:05d}"
      label = int(rng.random() < prevalence)
    views = ["PA"] * 8 + ["AP", "LL"]
    row = {
      "label": label,
      "subject": subject,
      "sex": ["female", "male"][int(subject[1:]) % 2],
      "age": int(rng.integers(5, 81)),
      "site": SITES[i % 2],
      "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
      "view": views[i % len(views)],
    }
    study = f"S{i:05d}"
    extension = FORMATS[image_format]
    if layout == "csv":
      name = f"films/{study}{extension}"
    elif layout == "folders":
      name = f"lungs/{['Normal', 'Abnormal'][label]}/{study}{extension}"
    else:
      name = f"{SITES[i % 2].upper()}_{i:04d}_{label}{extension}"
    tags = {"PatientID": subject, "PatientSex": row["sex"][0].upper(),
            "PatientAge": f"{row['age']:03d}Y", "ViewPosition": row["view"],
            "StudyDate": row["date"].replace("-", "")}  # fmt: skip
    pixels = synthetic.chest_xray(rng, bool(label), height, lesion_contrast, nuisance)
    os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
    with open(os.path.join(out, name), "wb") as f:
      f.write(_encode(pixels, image_format, tags))
    truth.append({"file": name, **row})
  if layout == "csv":
    columns = ["file", "label"] if image_format == "dicom" else list(films.CSV_COLUMNS)
    with open(os.path.join(out, films.CSV_NAME), "w", newline="") as f:
      writer = csv.DictWriter(f, columns, extrasaction="ignore")
      writer.writeheader()
      for i, row in enumerate(truth):  # Labels written in the forms a site uses.
        words = [("0", "1"), ("normal", "TB"), ("Normal", "Abnormal")][i % 3]
        writer.writerow({**row, "label": words[row["label"]]})
  return truth
