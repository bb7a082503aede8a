"""txr-predict's light parts: its copied constants, finding files, formatting; CLI flags."""

import json
import subprocess
import sys

from conftest import REPO

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
  for name in ("scans/z.png", "scans/a.JPG", "scans/notes.txt", "scans/b/c.jpeg", "x.bin"):
    (tmp_path / name).write_bytes(b"")
  found = predict.find_images([str(tmp_path / "scans"), str(tmp_path / "x.bin")])
  names = [p[len(str(tmp_path)) + 1 :] for p in found]
  assert names == ["scans/a.JPG", "scans/z.png", "scans/b/c.jpeg", "x.bin"]


RESULTS = [
  {"file": "a.png", "probability": 0.91234, "label": "abnormal", "out_of_distribution": False,
   "ood_score": 0.5},
  {"file": "bad.png", "error": "not a PNG or JPEG file"},
]  # fmt: skip


def test_formats_table_csv_and_json():
  table = predict.format_results(RESULTS, "table").splitlines()
  assert table[0].split() == ["file", "probability", "label", "out_of_distribution", "ood_score",
                              "error"]  # fmt: skip
  assert table[1].split() == ["a.png", "0.9123", "abnormal", "False", "0.5000"]
  assert table[2].split()[0] == "bad.png" and table[2].endswith("not a PNG or JPEG file")
  rows = predict.format_results(RESULTS, "csv").splitlines()
  assert rows[1] == "a.png,0.9123,abnormal,False,0.5000,"
  assert json.loads(predict.format_results(RESULTS, "json")) == RESULTS


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
  export_dir.mkdir()
  (export_dir / "saved_model.pb").write_bytes(b"")
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  out = subprocess.run(
    [sys.executable, "-m", "txr_model.predict", f"--export_dir={export_dir}", str(empty)],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert out.returncode == 2 and f"No PNG or JPEG files in {empty}" in out.stderr
