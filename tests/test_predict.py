"""txr-predict's light parts: its copied constants, finding files, formatting; CLI flags."""

import io
import json
import os
import subprocess
import sys

from conftest import REPO
from conftest import png_bytes as _png
import numpy as np
import pytest

from txr_data import image_codec
from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as shenzhen
from txr_model import export
from txr_model import predict


def test_copied_constants_agree_with_their_sources():
  assert predict.MAX_PIXELS == image_codec.MAX_PIXELS
  assert predict.METADATA == export.METADATA
  labels = shenzhen.Builder().info.features["label"].names
  assert list(predict.LABELS) == labels


def test_find_images_lists_folders_sorted_and_keeps_named_files(tmp_path):
  (tmp_path / "scans" / "b").mkdir(parents=True)
  for name in ("scans/z.png", "scans/a.JPG", "scans/notes.txt", "scans/b/c.jpeg", "x.bin",
               "scans/d.dcm"):  # fmt: skip
    (tmp_path / name).write_bytes(b"")
  found = predict.find_images([str(tmp_path / "scans"), str(tmp_path / "x.bin")])
  names = [p[len(str(tmp_path)) + 1 :] for p in found]
  assert names == ["scans/a.JPG", "scans/d.dcm", "scans/z.png", "scans/b/c.jpeg", "x.bin"]


RESULTS = [
  {"file": "a.png", "probability": 0.91234, "label": "abnormal", "out_of_distribution": False,
   "ood_score": 0.5},
  {"file": "bad.png", "error": "not a PNG or JPEG file"},
]  # fmt: skip


def _printed(fmt, results=RESULTS):
  out = io.StringIO()
  printer = predict.Printer(fmt, [r["file"] for r in results], out)
  lengths = []
  for result in results:
    printer.add(result)
    lengths.append(len(out.getvalue()))
  printer.close()
  assert lengths[0] > 0 and lengths[1] > lengths[0]  # Each row is out before the next comes.
  return out.getvalue()


def test_prints_table_csv_and_json_row_by_row():
  table = _printed("table").splitlines()
  assert table[0].split() == ["file", "probability", "label", "out_of_distribution", "ood_score",
                              "error"]  # fmt: skip
  assert table[1].split() == ["a.png", "0.9123", "abnormal", "False", "0.5000"]
  assert table[2].split()[0] == "bad.png" and table[2].endswith("not a PNG or JPEG file")
  assert table[1].index("abnormal") == table[0].index("label")  # aligned
  rows = _printed("csv").splitlines()
  assert rows[1] == "a.png,0.9123,abnormal,False,0.5000,"
  assert json.loads(_printed("json")) == RESULTS


def _image_file(tmp_path, name, data):
  (tmp_path / name).write_bytes(data)
  return str(tmp_path / name)


def test_read_image_checks_before_reading_everything(tmp_path):
  good = predict.read_image(_image_file(tmp_path, "ok.png", _png(np.zeros((4, 4), np.uint8))))
  assert good.startswith(b"\x89PNG")
  header = _png(np.zeros((4, 4), np.uint8))[:16] + (20000).to_bytes(4, "big") * 2
  cases = {
    "big.png": (header + b"\0" * 10, "20000 x 20000 pixels is too large"),
    "text.png": (b"hello", "not a PNG, JPEG or DICOM file"),
    "empty.png": (b"", "empty file"),
  }
  for name, (data, message) in cases.items():
    with pytest.raises(ValueError, match=message):
      predict.read_image(_image_file(tmp_path, name, data))
  fifo = tmp_path / "fifo.png"
  os.mkfifo(fifo)  # Reading it would block forever.
  with pytest.raises(ValueError, match="not a regular file"):
    predict.read_image(str(fifo))


def test_an_export_without_its_metadata_is_refused(tmp_path):
  export_dir = tmp_path / "export"
  export_dir.mkdir()
  (export_dir / "saved_model.pb").write_bytes(b"")
  out = subprocess.run(
    [sys.executable, "-m", "txr_model.predict", f"--export_dir={export_dir}", "x.png"],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert out.returncode == 2 and "has no assets.extra/txr.json: the export is incomplete" in (
    out.stderr
  )


def test_train_and_evaluate_define_only_their_own_flags():
  for module in ("txr_model.train", "txr_model.evaluate"):
    out = subprocess.run(
      [sys.executable, "-m", module, "--helpfull"], cwd=REPO, capture_output=True, text=True
    )
    assert "--model_dir" in out.stdout, out.stderr[-2000:]
    for flag in ("--export_dir", "--explain_dir", "--format"):
      assert flag not in out.stdout, (module, flag)


def test_a_folder_without_images_is_a_usage_error(tmp_path):
  export_dir, empty = tmp_path / "export", tmp_path / "scans"
  (export_dir / "assets.extra").mkdir(parents=True)
  (export_dir / "saved_model.pb").write_bytes(b"")
  (export_dir / predict.METADATA).write_text("{}")
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  out = subprocess.run(
    [sys.executable, "-m", "txr_model.predict", f"--export_dir={export_dir}", str(empty)],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert out.returncode == 2 and f"No PNG, JPEG or DICOM files in {empty}" in out.stderr
