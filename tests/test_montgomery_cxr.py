"""Tests of the montgomery_cxr builder: 12-bit images, lung masks, readings, splits, bad input."""

import os
import re
import shutil

from conftest import REAL_MONTGOMERY_NORMAL_IDS
from conftest import REAL_MONTGOMERY_TB_IDS
from conftest import png_bytes as _png
from conftest import real_montgomery_stems
from conftest import zip_tree
import numpy as np
import pytest
import tensorflow_datasets as tfds

import txr_data
from txr_data import image_codec
from txr_data import nlm_tb
from txr_data.montgomery_cxr import montgomery_cxr_dataset_builder as mcb
from txr_data.montgomery_cxr import synthetic

SAMPLE_ROOT = os.path.join(txr_data.MONTGOMERY_SAMPLE_DIR, "MontgomerySet")
SAMPLE_SPLITS = {"train": 15, "validation": 3, "test": 2}
MASKS = ("ManualMask/leftMask", "ManualMask/rightMask")


def _build(manual_dir, data_dir, config="original"):
  builder = tfds.builder(f"montgomery_cxr/{config}", data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
  )
  return builder


def _examples(builder, **kwargs):
  """{file name: example} over every split."""
  return {
    ex["image/filename"].decode(): ex
    for split in builder.info.splits
    for ex in tfds.as_numpy(builder.as_dataset(split=split, **kwargs))
  }


@pytest.fixture
def sample_copy(tmp_path):
  """A writable copy of the sample's `MontgomerySet` tree under tmp_path/manual."""
  dst = tmp_path / "manual" / "MontgomerySet"
  shutil.copytree(SAMPLE_ROOT, dst)
  return dst


# --- names, readings, splits ------------------------------------------------------


@pytest.mark.parametrize(
  "name,label", [("MCUCXR_0001_0.png", 0), ("/a/MCUCXR_0399_1.png", 1), ("mcucxr_0104_1.png", 1)]
)
def test_label_of(name, label):
  assert mcb.label_of(name) == label


@pytest.mark.parametrize(
  "text,sex,age,finding",
  [
    ("Patient's Sex: F \nPatient's Age: 045Y\nnormal\n", "female", 45, "normal"),
    (
      "Patient's Sex: M\r\nPatient's Age: 067Y\r\n\r\nright upper lobe\r\ncavitary lesion\r\n",
      "male", 67, "right upper lobe cavitary lesion",
    ),
    ("Patient's Sex: O \nPatient's Age: 005Y\nnormal", "unknown", 5, "normal"),
    ("Patient's Sex: F\nPatient's Age: 010M\nnormal", "female", 0, "normal"),
    ("Patient's Sex: M\nPatient's Age: 012D\nnormal", "male", 0, "normal"),
    ("Patient's Sex: M\nPatient's Age: 003W\nnormal", "male", 0, "normal"),
    ("patients age: 45\nPatient\u2019s Sex: Male\nnormal", "male", 45, "normal"),
    ("Patient's Sex:\nPatient's Age: unknown\nnormal", "unknown", -1, "normal"),
    ("Patient's Sex: F\nPatient's Age: 045X\n", "female", -1, ""),
    ("NO REPORT (same pt as MCUCXR_0162_1)", "unknown", -1, "NO REPORT (same pt as MCUCXR_0162_1)"),
    ("Patient's Sex: M\nPatient's Age: 2147483648Y\nnormal", "male", -1, "normal"),  # Not int32.
    ("Patient's Sex: M\nPatient's Age: 451Y\nnormal", "male", -1, "normal"),
    ("", "unknown", -1, ""),
  ],
)  # fmt: skip
def test_parse_reading(text, sex, age, finding):
  assert mcb.parse_reading(text) == nlm_tb.Reading(sex, age, finding)


def test_split_counts_of_the_real_archive():
  """The counts documented in the README, from the 138 real file names, split by patient."""
  stems = real_montgomery_stems()
  assert (len(set(REAL_MONTGOMERY_NORMAL_IDS)), len(set(REAL_MONTGOMERY_TB_IDS))) == (80, 58)
  subjects = nlm_tb.subjects_of(stems, {}, mcb.PREFIX, mcb.KNOWN_REPEATS)
  counts = {}
  for stem in stems:
    key = (nlm_tb.split_of(subjects[stem]), stem[-1])
    counts[key] = counts.get(key, 0) + 1
  assert counts == {
      ("train", "0"): 56, ("validation", "0"): 8, ("test", "0"): 16,
      ("train", "1"): 40, ("validation", "1"): 2, ("test", "1"): 16,
  }  # fmt: skip
  # The repeat films of MCUCXR_0162_1 (test) hashed by their own names went to train and validation.
  assert {nlm_tb.split_of(subjects[f"MCUCXR_0{i}_1"]) for i in (162, 166, 170)} == {"test"}


def test_subjects_chain_and_are_keyed_by_the_first_film():
  texts = {
    "MCUCXR_0170_1": "Patient's Sex: M\nsame PT as mcucxr_0166_1",  # Any case: canonicalised.
    "MCUCXR_0166_1": "NO REPORT (same pt as MCUCXR_0162_1)",
    "MCUCXR_0117_1": "stable CXR (same pt as MCUCXR_0113_1)",  # 0113_1 is not in this copy.
    "MCUCXR_0104_1": "Patient's Sex: F\nnormal",
  }
  stems = ["MCUCXR_0104_1", "MCUCXR_0117_1", "MCUCXR_0162_1", "MCUCXR_0166_1", "MCUCXR_0170_1"]
  assert nlm_tb.subjects_of(stems, texts, mcb.PREFIX, {}) == {
    "MCUCXR_0104_1": "MCUCXR_0104_1",
    "MCUCXR_0117_1": "MCUCXR_0113_1",
    "MCUCXR_0162_1": "MCUCXR_0162_1",
    "MCUCXR_0166_1": "MCUCXR_0162_1",
    "MCUCXR_0170_1": "MCUCXR_0162_1",
  }
  # Readings that are silent: the documented map alone gives the same subjects.
  silent = nlm_tb.subjects_of(stems, {}, mcb.PREFIX, mcb.KNOWN_REPEATS)
  assert silent == nlm_tb.subjects_of(stems, texts, mcb.PREFIX, mcb.KNOWN_REPEATS)


def test_repeat_films_of_one_patient_share_subject_fold_and_split(tmp_path, sample_copy):
  """0166_1 by the documented map (its reading removed), 0150_1 by its reading's words."""
  image = (sample_copy / "CXR_png" / "MCUCXR_0104_1.png").read_bytes()
  for stem in ("MCUCXR_0162_1", "MCUCXR_0166_1"):
    (sample_copy / "CXR_png" / f"{stem}.png").write_bytes(image)
  (sample_copy / "ClinicalReadings" / "MCUCXR_0150_1.txt").write_text(
    "Patient's Sex: F\nPatient's Age: 050Y\nstable (same pt as MCUCXR_0108_1)\n"
  )
  builder = _build(sample_copy.parent, tmp_path / "data", "512")
  where = {
    ex["image/filename"].decode()[:-4]: (split, ex["subject"].decode(), ex["fold"])
    for split in builder.info.splits
    for ex in tfds.as_numpy(builder.as_dataset(split=split))
  }
  first = ("test", "MCUCXR_0162_1", nlm_tb.fold_of("MCUCXR_0162_1"))
  assert where["MCUCXR_0162_1"] == where["MCUCXR_0166_1"] == first
  assert where["MCUCXR_0150_1"] == where["MCUCXR_0108_1"]
  assert where["MCUCXR_0150_1"][1] == "MCUCXR_0108_1"
  assert where["MCUCXR_0117_1"][1:] == where["MCUCXR_0113_1"][1:] == (
    "MCUCXR_0113_1", nlm_tb.fold_of("MCUCXR_0113_1")
  )  # fmt: skip
  assert where["MCUCXR_0001_0"][1] == "MCUCXR_0001_0"


def test_sample_uses_real_names_and_regenerates_identically(tmp_path):
  root = synthetic.write_archive(os.fspath(tmp_path), 20, seed=0)
  for folder in ("CXR_png", "ClinicalReadings", *MASKS):
    names = sorted(os.listdir(os.path.join(SAMPLE_ROOT, folder)))
    assert names == sorted(os.listdir(os.path.join(root, folder)))
    for name in names:
      with open(os.path.join(SAMPLE_ROOT, folder, name), "rb") as a:
        with open(os.path.join(root, folder, name), "rb") as b:
          assert a.read() == b.read(), f"{folder}/{name}: run make_dummy_data again"
  ids = {name[7:11] for name in os.listdir(os.path.join(SAMPLE_ROOT, "CXR_png"))}
  assert ids <= set(REAL_MONTGOMERY_NORMAL_IDS + REAL_MONTGOMERY_TB_IDS) and len(ids) == 20


def test_checksums_are_recorded():
  info = mcb.Builder.url_infos[mcb.Builder.URL]
  assert (int(info.size), info.checksum) == (
      616_853_875, "54601e952315d8f67383e9202a6e145997ade429f54f7e0af44b4e158714f424"
  )  # fmt: skip
  from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as scb

  assert scb.Builder.url_infos == {}  # Its size-only note is a comment that TFDS skips.


# --- 12-bit images and masks, end to end ------------------------------------------

_RAMP = np.arange(40 * 64).reshape(40, 64) * 4095 // (40 * 64 - 1)  # 0 .. 4095
_DIM_RAMP = _RAMP * 3000 // 4095  # 0 .. 3000: still 12-bit data, no sBIT.
_LEFT = np.zeros((40, 64), np.uint8)
_LEFT[5:30, 4:28] = 255
_RIGHT = np.zeros((40, 64), np.uint8)
_RIGHT[10:35, 20:60] = 1  # A 0/1 mask, as some copies have: the same as 0/255.
_BIG = (700, 560)  # Larger than 512: resized.


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
  """Both configs built from a few hand-made files: {config: {file name: example}}."""
  manual = tmp_path_factory.mktemp("manual")
  for sub in ("CXR_png", "ClinicalReadings", *MASKS):
    (manual / sub).mkdir(parents=True)

  def write(stem, pixels, sbit=0, masks=None):
    (manual / "CXR_png" / f"{stem}.png").write_bytes(
      synthetic.gray_png(pixels.astype(np.uint16), sbit)
    )
    for sub, mask in zip(MASKS, masks or (), strict=False):
      (manual / sub / f"{stem}.png").write_bytes(synthetic.gray_png(mask))

  write("MCUCXR_0001_0", _RAMP, sbit=12, masks=(_LEFT, _RIGHT))
  write("MCUCXR_0002_0", _DIM_RAMP, masks=(_LEFT, _LEFT))
  big_left, big_right = synthetic.lung_masks(*_BIG)
  write("MCUCXR_0104_1", np.full(_BIG, 2000), masks=(big_left, big_right))
  write("MCUCXR_0108_1", _RAMP)  # No masks.
  (manual / "ClinicalReadings" / "MCUCXR_0001_0.txt").write_text(
    "Patient's Sex: F \nPatient's Age: 045Y\nnormal\n"
  )
  out = {"manual": manual}
  for config in ("original", "512"):
    builder = _build(manual, tmp_path_factory.mktemp("data"), config)
    out[config] = _examples(builder)
    if config == "original":
      out["encoded"] = _examples(builder, decoders={"image": tfds.decode.SkipDecoding()})
  return out


def test_original_config_keeps_the_uint16_values_and_bytes(custom):
  examples = custom["original"]
  for name, values in [("MCUCXR_0001_0.png", _RAMP), ("MCUCXR_0002_0.png", _DIM_RAMP)]:
    image = examples[name]["image"]
    assert image.dtype == np.uint16 and image.shape == (40, 64, 1)
    np.testing.assert_array_equal(image[..., 0], values)
  assert examples["MCUCXR_0001_0.png"]["image"].max() == 4095
  for name, example in custom["encoded"].items():  # The source PNG, byte for byte.
    assert example["image"] == (custom["manual"] / "CXR_png" / name).read_bytes()


def test_original_stores_an_oriented_source_upright_with_its_sbit_depth(tmp_path):
  """Re-encoding dropped sBIT: 12-bit data of maximum 2000 was then read as 11-bit, 2x bright."""
  from conftest import png_with_exif
  import tensorflow as tf

  pixels = _RAMP * 2000 // 4095
  source = png_with_exif(synthetic.gray_png(pixels.astype(np.uint16), 12), 6, "MM")
  info = image_codec.png_info(source, "MCUCXR_0001_0.png")
  assert info.orientation == 6 and info.significant_bits == 12
  builder = tfds.builder("montgomery_cxr/original", data_dir=str(tmp_path))
  stored = builder._image(source, "MCUCXR_0001_0.png", info)
  stored_info = image_codec.png_info(stored, "stored.png")
  assert stored_info.orientation == 1 and stored_info.significant_bits == 12
  upright = tf.io.decode_png(stored, dtype=tf.uint16).numpy()[..., 0]
  np.testing.assert_array_equal(upright, np.rot90(pixels, 3))  # orientation 6: 90° clockwise
  scaled = image_codec.to_grayscale(stored, stored_info).numpy()  # as the 512 config reads it
  assert scaled.max() == round(2000 * 255 / 4095)  # 125; by its maximum's 11 bits, 249


@pytest.mark.parametrize("name", ["MCUCXR_0001_0.png", "MCUCXR_0002_0.png"])
def test_512_config_scales_12_bit_data_by_4095_not_65535(custom, name):
  values = _RAMP if name == "MCUCXR_0001_0.png" else _DIM_RAMP
  image = custom["512"][name]["image"]
  assert image.dtype == np.uint8 and image.shape == (40, 64, 1)
  expected = np.round(values * 255 / 4095)
  np.testing.assert_allclose(image[..., 0].astype(float), expected, atol=0.5)
  assert image.max() == round(values.max() * 255 / 4095)  # 255 (sBIT 12) or 187, not 11.


def test_lung_mask_is_the_binary_union_of_left_and_right(custom):
  for config in ("original", "512"):
    mask = custom[config]["MCUCXR_0001_0.png"]["lung_mask"]
    assert mask.dtype == np.uint8 and mask.shape == (40, 64, 1)
    np.testing.assert_array_equal(mask[..., 0], ((_LEFT > 0) | (_RIGHT > 0)).astype(np.uint8))


def test_lung_mask_is_resized_with_the_image_and_stays_binary(custom):
  original, small = custom["original"]["MCUCXR_0104_1.png"], custom["512"]["MCUCXR_0104_1.png"]
  assert original["image"].shape == original["lung_mask"].shape == (*_BIG, 1)
  assert small["image"].shape == small["lung_mask"].shape == (512, 410, 1)
  assert set(np.unique(small["lung_mask"])) == {0, 1}
  assert abs(small["lung_mask"].mean() - original["lung_mask"].mean()) < 0.01


def test_missing_masks_are_stored_all_zero(custom):
  for config in ("original", "512"):
    example = custom[config]["MCUCXR_0108_1.png"]
    assert example["lung_mask"].shape == example["image"].shape and not example["lung_mask"].any()


def test_readings_through_the_builder(custom):
  example = custom["original"]["MCUCXR_0001_0.png"]
  assert (example["sex"], example["age"], example["finding"]) == (0, 45, b"normal")
  unread = custom["original"]["MCUCXR_0002_0.png"]  # No readings file.
  assert (unread["sex"], unread["age"], unread["finding"]) == (2, -1, b"")


# --- sources and layouts ----------------------------------------------------------


@pytest.mark.parametrize("layout", ["MontgomerySet", "zip", "bare"])
def test_archive_layouts_build_the_same_dataset(tmp_path, layout):
  manual = tmp_path / "manual"
  if layout == "zip":
    manual.mkdir()
    zip_tree(SAMPLE_ROOT, manual / "NLM-MontgomeryCXRSet.zip", "MontgomerySet",
             "ManualMask/leftMask/._MCUCXR_0001_0.png")  # fmt: skip
  elif layout == "bare":  # Images and readings in one folder, the mask folders beside them.
    manual.mkdir()
    for sub in ("CXR_png", "ClinicalReadings"):
      for f in os.listdir(os.path.join(SAMPLE_ROOT, sub)):
        shutil.copy(os.path.join(SAMPLE_ROOT, sub, f), manual)
    for sub, name in zip(MASKS, ("LeftMask", "RIGHTMASK"), strict=True):  # Any case.
      shutil.copytree(os.path.join(SAMPLE_ROOT, sub), manual / name)
    (manual / "Thumbs.db").write_bytes(b"\0\1")
  else:
    shutil.copytree(SAMPLE_ROOT, manual / layout)
  builder = _build(manual, tmp_path / "data", "512")
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == SAMPLE_SPLITS
  sexes = builder.info.features["sex"].names
  for name, ex in _examples(builder).items():
    stem = name[:-4]
    reading_path = os.path.join(SAMPLE_ROOT, "ClinicalReadings", stem + ".txt")
    reading = nlm_tb.Reading()
    if os.path.exists(reading_path):
      with open(reading_path, newline="") as f:
        reading = mcb.parse_reading(f.read())
    assert ex["label"] == int(stem[-1]) and ex["patient_id"] == int(stem[7:11])
    assert ex["subject"].decode() == mcb.KNOWN_REPEATS.get(stem, stem)  # 0117_1: 0113_1's.
    assert (sexes[ex["sex"]], ex["age"], ex["finding"].decode()) == (
        reading.sex, reading.age, reading.finding
    )  # fmt: skip
    assert ex["image"].shape == ex["lung_mask"].shape and ex["image"].shape[-1] == 1
    assert 0.05 < ex["lung_mask"].mean() < 0.5 and ex["lung_mask"].max() == 1


def test_find_masks_ignores_case_and_keys_by_canonical_stem(tmp_path):
  for side in ("leftmask", "RIGHTMASK"):
    (tmp_path / side).mkdir()
    (tmp_path / side / "mcucxr_0001_0.png").write_bytes(b"")
  (tmp_path / "leftmask" / "notes.txt").write_text("not a mask")
  masks = mcb.find_masks(os.fspath(tmp_path))
  assert list(masks) == ["MCUCXR_0001_0"] and set(masks["MCUCXR_0001_0"]) == set(mcb.MASK_SIDES)


def test_missing_masks_are_counted_in_one_warning(tmp_path, sample_copy, caplog):
  for stem in ("MCUCXR_0001_0", "MCUCXR_0104_1"):
    for sub in MASKS:
      (sample_copy / sub / f"{stem}.png").unlink()
  with caplog.at_level("WARNING"):
    examples = _examples(_build(sample_copy.parent, tmp_path / "data", "512"))
  assert caplog.text.count("have no lung masks") == 1
  assert "2 image(s) have no lung masks" in caplog.text
  assert len(examples) == 20
  assert not examples["MCUCXR_0001_0.png"]["lung_mask"].any()
  assert examples["MCUCXR_0002_0.png"]["lung_mask"].any()


@pytest.mark.parametrize("state", ["missing", "unrelated"])
def test_missing_or_empty_manual_dir_is_a_clear_error(tmp_path, state):
  manual = tmp_path / "manual"
  if state == "unrelated":
    manual.mkdir()
    (manual / "notes.txt").write_text("hello")
  with pytest.raises(Exception) as error:
    _build(manual, tmp_path / "data")
  assert str(manual) in str(error.value) and "NLM-MontgomeryCXRSet.zip" in str(error.value)


# --- bad inputs: an error naming the file, never a skip ---------------------------


@pytest.mark.parametrize(
  "name,content,message",
  [
    ("CXR_png/MCUCXR_0001_0.png", "truncated", "truncated PNG"),
    ("CXR_png/MCUCXR_0001_0.png", b"", "empty"),
    ("CXR_png/MCUCXR_0001_0.png", b"Patient's Sex: F\nnormal\n", "not a PNG"),
    ("CXR_png/MCUCXR_0001_0.png", b"\xff\xd8\xff\xe0\0\x10JFIF\0", "a JPEG file named .png"),
    ("CXR_png/MCUCXR_0999_2.png", "copy", "suffix _0 normal"),
    ("ManualMask/leftMask/MCUCXR_0001_0.png", "truncated", "truncated PNG"),
    ("ManualMask/rightMask/MCUCXR_0001_0.png", "small", "a 10 x 12 mask for a"),
    ("ManualMask/leftMask/MCUCXR_0001_0.png", "gray", "not a binary mask"),
  ],
)
def test_bad_files_fail_the_build_by_name(tmp_path, sample_copy, name, content, message):
  target = sample_copy / name
  if content == "truncated":
    content = target.read_bytes()[: target.stat().st_size // 2]
  elif content == "copy":
    content = (sample_copy / "CXR_png" / "MCUCXR_0001_0.png").read_bytes()
  elif content == "small":
    content = synthetic.gray_png(np.full((12, 10), 255, np.uint8))
  elif content == "gray":  # An image, not a mask, with the image's size.
    info = image_codec.png_info(target.read_bytes(), name)
    ramp = np.linspace(0, 255, info.height * info.width).reshape(info.height, info.width)
    content = synthetic.gray_png(ramp.astype(np.uint8))
  target.write_bytes(content)
  with pytest.raises(ValueError, match=f"{re.escape(name)}: .*{message}"):
    _build(sample_copy.parent, tmp_path / "data")
  assert not list((tmp_path / "data").glob("montgomery_cxr/original/*/*.tfrecord*"))


def test_a_mask_without_its_other_side_is_refused(tmp_path, sample_copy):
  (sample_copy / "ManualMask" / "rightMask" / "MCUCXR_0002_0.png").unlink()
  with pytest.raises(ValueError, match="leftMask/MCUCXR_0002_0.png: this image's rightMask is"):
    _build(sample_copy.parent, tmp_path / "data")


def test_original_refuses_8_bit_images_which_512_converts(tmp_path, sample_copy):
  target = sample_copy / "CXR_png" / "MCUCXR_0002_0.png"
  mask = sample_copy / "ManualMask" / "leftMask" / "MCUCXR_0002_0.png"  # Its size: the image's.
  info = image_codec.png_info(mask.read_bytes(), os.fspath(mask))
  gray = np.linspace(0, 255, info.height * info.width).astype(np.uint8)
  target.write_bytes(_png(gray.reshape(info.height, info.width)))
  with pytest.raises(ValueError, match="MCUCXR_0002_0.png: a grayscale PNG with 8-bit samples"):
    _build(sample_copy.parent, tmp_path / "original")
  example = _examples(_build(sample_copy.parent, tmp_path / "512", "512"))["MCUCXR_0002_0.png"]
  np.testing.assert_array_equal(example["image"].ravel(), gray)
