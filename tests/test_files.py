"""Finding and reading the files both predictors classify (txr_lite/files.py)."""

import os

from conftest import png_bytes
import numpy as np
import pytest

from txr_lite import files


def test_only_pngs_jpegs_and_dicoms_with_pixels_get_past_the_header():
  png = png_bytes(np.zeros((40, 30), np.uint8))
  files.check_header(png[: files.HEADER_BYTES])  # passes
  files.check_header(b"\xff\xd8\xff\xe0" + bytes(100))  # a JPEG's start passes
  huge = png[:16] + (20000).to_bytes(4, "big") * 2 + png[24:]
  empty = png[:16] + (0).to_bytes(4, "big") + png[20:]
  for header, message in (
    (b"GIF89a" + bytes(50), "not a PNG, JPEG or DICOM file"),
    (png[:20], "truncated or corrupt PNG: no complete IHDR header"),
    (huge, "20000 x 20000 pixels is too large for a radiograph"),
    (empty, "0 x 40 pixels: the PNG header declares an empty image"),
  ):
    with pytest.raises(ValueError, match=message):
      files.check_header(header)
  assert files.is_dicom("scan.DCM", b"") and files.is_dicom("x", bytes(128) + b"DICM")
  assert not files.is_dicom("scan.png", png)


def test_read_file_refuses_what_it_cannot_use_by_reason(tmp_path):
  png = png_bytes(np.zeros((40, 30), np.uint8))
  (tmp_path / "a.png").write_bytes(png)
  assert files.read_file(str(tmp_path / "a.png")) == (png, False)
  (tmp_path / "empty.png").write_bytes(b"")
  os.mkfifo(tmp_path / "fifo.png")
  for name, message in (("empty.png", "empty file"), ("fifo.png", "not a regular file")):
    with pytest.raises(ValueError, match=message):
      files.read_file(str(tmp_path / name))
  with pytest.raises(ValueError, match="reads local files only"):
    files.read_file("gs://bucket/a.png")
  with pytest.raises(FileNotFoundError):
    files.read_file(str(tmp_path / "missing.png"))


def test_names_print_as_utf8_and_the_usage_error_names_the_paths(tmp_path):
  assert files.display_name(os.fsdecode(b"/x/r\xe9sum\xe9.png")) == "/x/r\\xe9sum\\xe9.png"
  assert files.reason(PermissionError(13, "Permission denied", "/x")) == (
    "cannot read: Permission denied"
  )
  assert files.no_images(["a", tmp_path]) == f"No PNG, JPEG or DICOM files in a {tmp_path}."
