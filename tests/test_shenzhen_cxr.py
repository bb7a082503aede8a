"""Unit and end-to-end tests of the shenzhen_cxr builder and its image codec."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO
from conftest import SAMPLE_ROOT
from conftest import png_bytes as _png
from conftest import zip_tree
import numpy as np
import pytest
import tensorflow_datasets as tfds

from txr_data import image_codec
from txr_data import nlm_tb
from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as scb


def _build(manual_dir, data_dir, config="original"):
  builder = tfds.builder(f"shenzhen_cxr/{config}", data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  )
  return builder


def _filenames_by_split(builder):
  return {
    split: sorted(
      ex["image/filename"].decode() for ex in tfds.as_numpy(builder.as_dataset(split=split))
    )
    for split in builder.info.splits
  }


# --- file name -> label, readings, splits -------------------------------------


@pytest.mark.parametrize(
  "name,label",
  [("CHNCXR_0001_0.png", 0), ("CHNCXR_0662_1.png", 1), ("/a/b/CHNCXR_0327_1.png", 1)],
)
def test_label_of(name, label):
  assert scb.label_of(name) == label


@pytest.mark.parametrize("name", ["CHNCXR_0001_2.png", "CHNCXR_0001.png", "CHNCXR_0001_0.jpg"])
def test_label_of_rejects_bad_names(name):
  with pytest.raises(ValueError, match=name):
    scb.label_of(name)


@pytest.mark.parametrize(
  "text,sex,age,finding",
  [
    ("male 35yrs\nnormal\n", "male", 35, "normal"),
    ("Male,35yr\nSTB,ATB in left upper field", "male", 35, "STB,ATB in left upper field"),
    ("female 25\r\nnormal", "female", 25, "normal"),
    ("male  45 yrs\n\nbilateral PTB\n", "male", 45, "bilateral PTB"),
    ("O\nnormal", "unknown", -1, "normal"),
    ("female 8mon\nnormal", "female", 0, "normal"),
    ("", "unknown", -1, ""),
    ("??? garbled\n", "unknown", -1, ""),
  ],
)
def test_parse_reading(text, sex, age, finding):
  assert scb.parse_reading(text) == nlm_tb.Reading(sex, age, finding)


def test_split_counts_of_the_real_archive():
  """The counts documented in the README, from the 662 real file names."""
  stems = [f"CHNCXR_{i:04d}_0" for i in range(1, 327)]
  stems += [f"CHNCXR_{i:04d}_1" for i in range(327, 663)]
  counts = {}
  for stem in stems:
    key = (nlm_tb.split_of(stem), stem[-1])
    counts[key] = counts.get(key, 0) + 1
  assert counts == {
      ("train", "0"): 244, ("validation", "0"): 31, ("test", "0"): 51,
      ("train", "1"): 240, ("validation", "1"): 33, ("test", "1"): 63,
  }  # fmt: skip


@pytest.mark.heavy
def test_splits_are_stable_across_processes():
  stems = [f"CHNCXR_{i:04d}_{i % 2}" for i in range(1, 200)]
  code = (
    "import json,sys; from txr_data import nlm_tb as s;"
    "print(json.dumps([s.split_of(x) + str(s.fold_of(x)) for x in json.loads(sys.argv[1])]))"
  )
  env = dict(os.environ, PYTHONHASHSEED="123")
  out = subprocess.run(
      [sys.executable, "-c", code, json.dumps(stems)],
      env=env, cwd=REPO, capture_output=True, text=True, check=True,
  )  # fmt: skip
  assert json.loads(out.stdout) == [nlm_tb.split_of(s) + str(nlm_tb.fold_of(s)) for s in stems]


# --- sources and layouts ----------------------------------------------------------


@pytest.mark.parametrize("root", ["ChinaSet_AllFiles", "Shenzhen-Hospital-CXR-Set", "zip", "bare"])
def test_archive_layouts_build_the_same_dataset(tmp_path, root):
  manual = tmp_path / "manual"
  if root == "zip":
    manual.mkdir()
    zip_tree(SAMPLE_ROOT, manual / "ChinaSet_AllFiles.zip", "ChinaSet_AllFiles",
             "CXR_png/._CHNCXR_0001_0.png")  # fmt: skip
  elif root == "bare":
    manual.mkdir()
    for sub in ("CXR_png", "ClinicalReadings"):
      for f in os.listdir(os.path.join(SAMPLE_ROOT, sub)):
        shutil.copy(os.path.join(SAMPLE_ROOT, sub, f), manual)
    (manual / "Thumbs.db").write_bytes(b"\0\1")
    (manual / ".DS_Store").write_bytes(b"\0\1")
  else:
    shutil.copytree(SAMPLE_ROOT, manual / root)
  if root == "Shenzhen-Hospital-CXR-Set":  # The newer release's masks and annotations: not images.
    image = (manual / root / "CXR_png" / "CHNCXR_0001_0.png").read_bytes()
    for name in ("Annotations/masks/CHNCXR_0327_1_Calcified_Nodule_2.png", "mask/CHNCXR_0001_0.png",
                 "Mask/CHNCXR_0002_0_mask.png", "Annotations/CHNCXR_0001_0.json"):  # fmt: skip
      (manual / root / name).parent.mkdir(parents=True, exist_ok=True)
      (manual / root / name).write_bytes(image)
    (manual / root / "CXR_png" / "CHNCXR_0002_0.json").write_text('{"objects": []}')
  builder = _build(manual, tmp_path / "data")
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      "train": 45, "validation": 9, "test": 10
  }  # fmt: skip
  sexes = builder.info.features["sex"].names
  for ex in tfds.as_numpy(builder.as_dataset(split="train")):
    stem = ex["image/filename"].decode()[:-4]
    reading_path = os.path.join(SAMPLE_ROOT, "ClinicalReadings", stem + ".txt")
    reading = nlm_tb.Reading()
    if os.path.exists(reading_path):
      with open(reading_path) as f:
        reading = scb.parse_reading(f.read())
    assert ex["label"] == int(stem[-1])
    assert (sexes[ex["sex"]], ex["age"], ex["finding"].decode()) == (
        reading.sex, reading.age, reading.finding
    )  # fmt: skip
    assert ex["image"].ndim == 3 and ex["image"].shape[-1] == 1


def test_original_config_stores_gray8_bytes_unchanged(tmp_path):
  builder = _build(SAMPLE_ROOT, tmp_path)
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  checked = 0
  for ex in tfds.as_numpy(ds):
    src = os.path.join(SAMPLE_ROOT, "CXR_png", ex["image/filename"].decode())
    with open(src, "rb") as f:
      data = f.read()
    if image_codec.png_info(data, src).is_gray8:
      assert ex["image"] == data
      checked += 1
  assert checked >= 10


def test_adding_files_moves_no_existing_file(tmp_path, sample_copy):
  full = _filenames_by_split(_build(sample_copy.parent, tmp_path / "full"))
  for f in sorted(os.listdir(sample_copy / "CXR_png"))[::2]:
    os.remove(sample_copy / "CXR_png" / f)
  half = _filenames_by_split(_build(sample_copy.parent, tmp_path / "half"))
  for split, names in half.items():
    assert set(names) <= set(full[split])


# --- bad inputs: an error naming the file, never a skip ---------------------------


@pytest.mark.parametrize(
  "name,content,message",
  [
    ("CHNCXR_0001_0.png", "truncated", "truncated PNG"),
    ("CHNCXR_0001_0.png", b"", "empty"),
    ("CHNCXR_0001_0.png", b"male 35yrs\nnormal\n", "not a PNG"),
    ("CHNCXR_0999_2.png", "copy", "suffix _0 normal"),
  ],
)
def test_bad_files_fail_the_build_by_name(tmp_path, sample_copy, name, content, message):
  target = sample_copy / "CXR_png" / name
  if content == "truncated":
    content = target.read_bytes()[: target.stat().st_size // 2]
  elif content == "copy":
    content = (sample_copy / "CXR_png" / "CHNCXR_0001_0.png").read_bytes()
  target.write_bytes(content)
  with pytest.raises(ValueError, match=f"{name}.*{message}"):
    _build(sample_copy.parent, tmp_path / "data")
  assert not list((tmp_path / "data").glob("shenzhen_cxr/original/*/*.tfrecord*"))


def test_palette_rgba_16bit_sources_build(tmp_path, sample_copy):
  gray = np.linspace(0, 255, 80 * 90).astype(np.uint8).reshape(80, 90)
  rgba = np.concatenate([np.repeat(gray[..., None], 3, -1), np.full_like(gray[..., None], 255)], -1)
  (sample_copy / "CXR_png" / "CHNCXR_0001_0.png").write_bytes(_png(gray, "P"))
  (sample_copy / "CXR_png" / "CHNCXR_0002_0.png").write_bytes(_png(rgba))
  (sample_copy / "CXR_png" / "CHNCXR_0003_0.png").write_bytes(_png(gray.astype(np.uint16) * 257))
  builder = _build(sample_copy.parent, tmp_path / "data")
  seen = 0
  for split in builder.info.splits:
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      if ex["image/filename"] in (b"CHNCXR_0001_0.png", b"CHNCXR_0002_0.png", b"CHNCXR_0003_0.png"):
        np.testing.assert_array_equal(ex["image"][..., 0], gray)
        seen += 1
  assert seen == 3


@pytest.mark.parametrize("state", ["missing", "empty", "unrelated"])
def test_missing_or_empty_manual_dir_is_a_clear_error(tmp_path, state):
  manual = tmp_path / "manual"
  if state != "missing":
    manual.mkdir()
  if state == "unrelated":
    (manual / "notes.txt").write_text("hello")
  with pytest.raises(Exception) as error:
    _build(manual, tmp_path / "data")
  message = str(error.value)
  assert str(manual) in message and "ChinaSet_AllFiles.zip" in message  # where + what
  assert ("does not exist or is empty" in message) == (state != "unrelated")


# --- end to end, as users run it ----------------------------------------------------


def _run(args, **kwargs):
  out = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout


@pytest.mark.heavy
def test_tfds_cli_build_then_load_in_fresh_processes(tmp_path):
  data_dir = tmp_path / "data"
  tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
  _run(
      [tfds_cli, "build", "txr_data/shenzhen_cxr", f"--data_dir={data_dir}",
       "--manual_dir=txr_data/shenzhen_cxr/dummy_data", "--config=512"],
      cwd=REPO,
  )  # fmt: skip
  load = (
    "import txr_data, tensorflow_datasets as tfds, sys\n"
    f"ds = tfds.load('shenzhen_cxr/512', split='test', data_dir={os.fspath(data_dir)!r})\n"
    "print(sum(1 for _ in ds))\n"
  )
  assert _run([sys.executable, "-c", load], cwd=tmp_path).split()[-1] == "10"
  built = data_dir / "shenzhen_cxr" / "512"
  bare = (
    "import sys, tensorflow_datasets as tfds\n"
    f"b = tfds.builder_from_directory({os.fspath(built / str(scb.Builder.VERSION))!r})\n"
    "n = sum(1 for _ in b.as_dataset(split='train'))\n"
    "assert not any(m.startswith('txr') for m in sys.modules), 'txr was imported'\n"
    "print(n, b.info.features['label'].names)\n"
  )
  out = _run([sys.executable, "-c", bare], cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
  assert "45 ['normal', 'abnormal']" in out


def test_corrupt_image_data_fails_the_build_by_name(tmp_path, sample_copy):
  import zlib

  target = sample_copy / "CXR_png" / "CHNCXR_0001_0.png"
  png = target.read_bytes()
  start, end = png.index(b"IDAT") - 4, png.index(b"IEND") - 4
  body = png[start + 8 : end - 4][: (end - start) // 2]  # The zlib stream cut in half.
  chunk = len(body).to_bytes(4, "big") + b"IDAT" + body
  crc = zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
  target.write_bytes(png[:start] + chunk + crc + png[end:])
  with pytest.raises(ValueError, match="CHNCXR_0001_0.png: corrupt PNG image data"):
    _build(sample_copy.parent, tmp_path / "data")


def test_lower_case_names_get_the_canonical_key_and_split(tmp_path, sample_copy):
  png = sample_copy / "CXR_png" / "CHNCXR_0001_0.png"
  txt = sample_copy / "ClinicalReadings" / "CHNCXR_0001_0.txt"
  png.rename(png.with_name("chncxr_0001_0.png"))
  txt.rename(txt.with_name("chncxr_0001_0.txt"))
  builder = _build(sample_copy.parent, tmp_path / "data")
  split = nlm_tb.split_of("CHNCXR_0001_0")
  found = [
    ex for ex in tfds.as_numpy(builder.as_dataset(split=split))
    if ex["image/filename"] == b"chncxr_0001_0.png"
  ]  # fmt: skip
  assert len(found) == 1 and found[0]["patient_id"] == 1 and found[0]["sex"] != 2


def test_a_patient_filed_with_both_labels_is_refused(tmp_path, sample_copy):
  src = sample_copy / "CXR_png" / "CHNCXR_0001_0.png"
  (sample_copy / "CXR_png" / "CHNCXR_0001_1.png").write_bytes(src.read_bytes())
  with pytest.raises(ValueError, match="CHNCXR_0001_1.png: the same patient is also filed"):
    _build(sample_copy.parent, tmp_path / "data")


def test_conflicting_readings_in_two_layouts_are_refused(tmp_path, sample_copy):
  other = sample_copy / "extra"
  other.mkdir()
  (other / "CHNCXR_0001_0.txt").write_text("female 40yrs\nnormal\n")
  with pytest.raises(ValueError, match="CHNCXR_0001_0.txt: differs from the reading at"):
    _build(sample_copy.parent, tmp_path / "data")


@pytest.mark.parametrize(
  "data,expected",
  [
    ("male 35yrs\nnormal".encode("utf-16"), "male 35yrs\nnormal"),
    ("female 30 años\nnormal".encode("latin-1"), "female 30 años\nnormal"),
    ("male 35yrs\nnormal".encode("utf-8-sig"), "male 35yrs\nnormal"),
    (b"\x00\x01\x02\x89PNG binary", None),
  ],
)
def test_readings_in_other_encodings(data, expected):
  from txr_data import nlm_tb

  assert nlm_tb.decode_reading(data) == expected


def test_unreadable_readings_are_counted_in_a_warning(tmp_path, sample_copy, caplog):
  for name in ("CHNCXR_0001_0.txt", "CHNCXR_0002_0.txt"):
    (sample_copy / "ClinicalReadings" / name).write_bytes(b"\x00\x01binary\xff")
  with caplog.at_level("WARNING"):
    builder = _build(sample_copy.parent, tmp_path / "data")
  assert "2 readings file(s) are not text" in caplog.text
  assert builder.info.splits.total_num_examples == 64


def test_unrelated_non_utf8_names_and_symlink_loops_do_not_stop_the_build(tmp_path, sample_copy):
  # TF lists names as UTF-8: a Latin-1 résumé.txt stopped the build without a name.
  open(os.path.join(os.fsencode(sample_copy), b"r\xe9sum\xe9.txt"), "wb").close()
  (sample_copy / "links").mkdir()
  os.symlink(sample_copy, sample_copy / "links" / "loop")  # Two loops: walked 2**40 ways before.
  os.symlink(sample_copy / "links", sample_copy / "links" / "again")
  builder = _build(sample_copy.parent, tmp_path / "data")
  assert builder.info.splits.total_num_examples == 64


def test_non_utf8_image_name_is_named(tmp_path, sample_copy):
  open(os.path.join(os.fsencode(sample_copy), b"CHNCXR_0001_0\xe9.png"), "wb").close()
  with pytest.raises(ValueError, match=r"CHNCXR_0001_0.*\.png: the file name is not UTF-8"):
    _build(sample_copy.parent, tmp_path / "data")


def test_a_split_without_images_names_the_split(tmp_path, sample_copy):
  for f in sorted(os.listdir(sample_copy / "CXR_png"))[2:]:
    os.remove(sample_copy / "CXR_png" / f)
  kept = {nlm_tb.split_of(f"CHNCXR_000{i}_0") for i in (1, 2)}
  missing = [split for split in ("train", "validation", "test") if split not in kept]
  with pytest.raises(ValueError, match=f"No image of the 2 under .* falls in the {missing[0]}"):
    _build(sample_copy.parent, tmp_path / "data")


def test_each_image_is_its_own_subject_and_folds_by_it(tmp_path):
  builder = _build(SAMPLE_ROOT, tmp_path)
  for split in builder.info.splits:
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      stem = ex["image/filename"].decode()[:-4]
      assert ex["subject"].decode() == stem and ex["fold"] == nlm_tb.fold_of(stem)
