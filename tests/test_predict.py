"""txr-predict's light parts: its copied constants, finding files, formatting; CLI flags."""

import os
import signal
import subprocess
import sys

from conftest import REPO
from conftest import png_bytes as _png
from conftest import saved_model_stub
import numpy as np
import pytest

from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as shenzhen
from txr_lite import contract
from txr_lite import files as files_lib
from txr_model import predict


def test_the_contracts_labels_are_the_datasets():
  assert list(contract.LABELS) == shenzhen.Builder().info.features["label"].names


def test_find_images_lists_folders_sorted_and_keeps_named_files(tmp_path):
  (tmp_path / "scans" / "b").mkdir(parents=True)
  for name in ("scans/z.png", "scans/a.JPG", "scans/notes.txt", "scans/b/c.jpeg", "x.bin",
               "scans/d.dcm"):  # fmt: skip
    (tmp_path / name).write_bytes(b"")
  found, unreadable = predict.find_images([str(tmp_path / "scans"), str(tmp_path / "x.bin")])
  names = [p[len(str(tmp_path)) + 1 :] for p in found]
  assert names == ["scans/a.JPG", "scans/d.dcm", "scans/z.png", "scans/b/c.jpeg", "x.bin"]
  assert unreadable == []


@pytest.fixture
def alarm():
  """Fails a test that runs for more than 20 s (instead of hanging the suite)."""

  def timeout(*_):
    raise TimeoutError("still walking after 20 s")

  previous = signal.signal(signal.SIGALRM, timeout)
  signal.alarm(20)
  yield
  signal.alarm(0)
  signal.signal(signal.SIGALRM, previous)


def test_symlinks_back_up_the_tree_are_walked_once(tmp_path, alarm):
  scans = tmp_path / "scans"
  (scans / "sub").mkdir(parents=True)
  (scans / "a.png").write_bytes(b"")
  (scans / "sub" / "b.png").write_bytes(b"")
  (scans / "self").symlink_to(scans)  # Listed the images 41 times.
  (scans / "sub" / "up1").symlink_to(scans)  # Two links back: walked forever.
  (scans / "sub" / "up2").symlink_to(scans)
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "elsewhere" / "c.png").write_bytes(b"")
  (scans / "linked").symlink_to(tmp_path / "elsewhere")  # A link out of the tree is followed.
  found, unreadable = predict.find_images([str(scans)])
  assert [p[len(str(scans)) + 1 :] for p in found] == ["a.png", "linked/c.png", "sub/b.png"]
  assert unreadable == []


def test_unreadable_folders_and_names_that_are_not_utf8_are_rows_not_crashes(tmp_path, monkeypatch):
  scans = tmp_path / "scans"
  (scans / "locked").mkdir(parents=True)
  (scans / "locked" / "x.png").write_bytes(b"")
  latin1 = os.fsdecode(bytes(scans) + b"/r\xe9sum\xe9")
  open(os.fsencode(latin1) + b".txt", "wb").close()  # Unrelated, and not UTF-8.
  png = _png(np.zeros((4, 4), np.uint8))
  with open(os.fsencode(latin1) + b".png", "wb") as f:
    f.write(png)
  scandir = os.scandir

  def permission_denied_in_locked(path):  # As for a non-root user after chmod 000.
    if os.fsdecode(path).endswith("locked"):
      raise PermissionError(13, "Permission denied", os.fsdecode(path))
    return scandir(path)

  monkeypatch.setattr(os, "scandir", permission_denied_in_locked)
  found, unreadable = predict.find_images([str(scans)])
  assert found == [latin1 + ".png"]
  assert unreadable == [{"file": str(scans / "locked"), "error": "cannot read: Permission denied"}]
  assert predict.read_image(found[0]) == png  # Read by its bytes.
  assert files_lib.display_name(found[0]).endswith("/r\\xe9sum\\xe9.png")


def _image_file(tmp_path, name, data):
  (tmp_path / name).write_bytes(data)
  return str(tmp_path / name)


def test_read_image_checks_before_reading_everything(tmp_path):
  good = predict.read_image(_image_file(tmp_path, "ok.png", _png(np.zeros((4, 4), np.uint8))))
  assert good.startswith(b"\x89PNG")
  header = _png(np.zeros((4, 4), np.uint8))[:16] + (20000).to_bytes(4, "big") * 2
  cases = {
    "big.png": (header + b"\0" * 10, "20000 x 20000 pixels is too large"),
    "short_ihdr.png": (header[:20], "truncated or corrupt PNG: no complete IHDR header"),
    "no_ihdr.png": (header[:12] + b"tEXt" + header[16:], "no complete IHDR header"),
    "zero_width.png": (
      header[:16] + bytes(4) + header[20:],
      "0 x 20000 pixels: the PNG header declares an empty image",
    ),  # fmt: skip
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


@pytest.mark.heavy
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


@pytest.mark.parametrize(
  "text, message",
  [
    ('{"format": 1}', "metadata format 1, written by an older txr; export again"),
    ('{"format": 99}', "metadata format 99, written by a newer txr than this one"),
    ("not json", "not JSON"),
  ],
)
def test_metadata_it_cannot_use_is_a_usage_error_before_any_work(tmp_path, text, message):
  """In-process: txr-predict prints a usage error as one line and exits 2 (the test above)."""
  from absl import app

  export_dir = saved_model_stub(tmp_path / "export")
  (export_dir / contract.SAVED_MODEL_METADATA).write_text(text)
  with pytest.raises(app.UsageError, match=message):
    predict.read_metadata(str(export_dir))


@pytest.mark.heavy
def test_train_and_evaluate_define_only_their_own_flags():
  for module in ("txr_model.train", "txr_model.evaluate"):
    out = subprocess.run(
      [sys.executable, "-m", module, "--helpfull"], cwd=REPO, capture_output=True, text=True
    )
    assert "--model_dir" in out.stdout, out.stderr[-2000:]
    for flag in ("--export_dir", "--explain_dir", "--format"):
      assert flag not in out.stdout, (module, flag)


@pytest.mark.heavy
def test_a_folder_without_images_is_a_usage_error(tmp_path):
  export_dir, empty = tmp_path / "export", tmp_path / "scans"
  saved_model_stub(export_dir)
  empty.mkdir()
  (empty / "notes.txt").write_text("no images here")
  out = subprocess.run(
    [sys.executable, "-m", "txr_model.predict", f"--export_dir={export_dir}", str(empty)],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert out.returncode == 2 and f"No PNG, JPEG or DICOM files in {empty}" in out.stderr


@pytest.mark.heavy
def test_a_closed_pipe_ends_quietly(tmp_path):
  """`txr-predict ... | head -1`: the reader is gone; no BrokenPipeError traceback."""
  export_dir, scans = tmp_path / "export", tmp_path / "scans"
  saved_model_stub(export_dir)
  scans.mkdir()
  (scans / "a.png").write_bytes(_png(np.zeros((4, 4), np.uint8)))
  read, write = os.pipe()
  os.close(read)  # The first row printed meets a closed pipe.
  out = subprocess.run(
    [sys.executable, "-m", "txr_model.predict", f"--export_dir={export_dir}", str(scans)],
    cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  os.close(write)
  assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr[-2000:]
  assert out.returncode == 1
