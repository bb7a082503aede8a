"""local_cxr: a site's films in each layout and format, its refusals, its split and its build."""

import hashlib
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from txr_data import image_codec
from txr_data import nlm_tb
from txr_data.local_cxr import films
from txr_data.local_cxr import local_cxr_dataset_builder as lcb
from txr_data.local_cxr import synthetic
from txr_lite import dicom

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIEWS_INDEX = {v: i for i, v in enumerate(films.VIEWS)}


def _site(tmp_path, layout="csv", image_format="png", n=24, seed=0):
  raw = tmp_path / f"{layout}_{image_format}"
  truth = synthetic.write_site(os.fspath(raw), n, layout, image_format, seed)
  return raw, {row["file"]: row for row in truth}


@pytest.mark.parametrize(
  "layout,image_format",
  [("csv", "png"), ("folders", "jpeg"), ("suffix", "png"), ("csv", "dicom"), ("folders", "dicom")],
)
def test_each_layout_gives_every_film_its_label_and_attributes(tmp_path, layout, image_format):
  raw, truth = _site(tmp_path, layout, image_format)
  found_layout, found = films.find(os.fspath(raw))
  assert found_layout == layout
  assert sorted(f.name for f in found) == sorted(truth)
  for film in found:
    row = truth[film.name]
    assert film.kind == image_format and film.label == row["label"], film
    if layout == "csv" or image_format == "dicom":  # Where the site recorded them.
      assert (film.subject, film.sex, film.age, film.view, film.date) == (
        row["subject"], row["sex"], row["age"], row["view"], row["date"]
      ), film  # fmt: skip
    if layout == "csv" and image_format != "dicom":
      assert film.site == row["site"]
    if layout != "csv" and image_format != "dicom":  # Nothing names the patient: the film is one.
      assert (film.sex, film.age, film.view) == ("unknown", -1, "unknown")


def test_nested_class_folders_any_case(tmp_path):
  raw, truth = _site(tmp_path, "folders")
  (raw / "lungs" / "Abnormal").rename(raw / "lungs" / "TB")
  (raw / "lungs" / "Normal").rename(raw / "lungs" / "normal")
  _, found = films.find(os.fspath(raw))
  labels = {f.name.split("/", 2)[2]: f.label for f in found}
  assert labels == {name.split("/", 2)[2]: row["label"] for name, row in truth.items()}


def test_a_file_without_the_dicm_preamble_or_an_extension_is_not_a_film(tmp_path):
  raw, truth = _site(tmp_path, "folders", "dicom", n=12)
  dcm = next(raw.glob("lungs/*/*.dcm"))
  dcm.rename(dcm.with_suffix(""))  # PACS exports often have no extension.
  (raw / "lungs" / "Normal" / "notes").write_text("not a film")
  _, found = films.find(os.fspath(raw))
  assert len(found) == len(truth)
  assert any(f.name.endswith(dcm.stem) and f.kind == "dicom" for f in found)


def test_the_csv_wins_over_a_dicom_tag_and_the_disagreement_is_reported(tmp_path, caplog):
  raw, truth = _site(tmp_path, "csv", "dicom", n=12)
  name = sorted(truth)[0]
  other_sex = "M" if truth[name]["sex"] == "female" else "F"
  (raw / "labels.csv").write_text(
    (raw / "labels.csv").read_text().replace("file,label", "file,label,sex")
    .replace(f"{name},0", f"{name},0,{other_sex}").replace(f"{name},1", f"{name},1,{other_sex}")
  )  # fmt: skip
  with caplog.at_level(logging.WARNING):
    _, found = films.find(os.fspath(raw))
  film = next(f for f in found if f.name == name)
  assert film.sex != truth[name]["sex"]  # The CSV's value.
  assert f"{name} disagree" in caplog.text and "in the DICOM header" in caplog.text


def test_the_csv_wins_over_a_folder_and_the_disagreement_is_reported(tmp_path, caplog):
  raw = tmp_path / "raw"
  (raw / "Normal").mkdir(parents=True)
  for i in range(3):
    synthetic_png = tf.io.encode_png(np.full((64, 64, 1), 40 * i, np.uint8)).numpy()
    (raw / "Normal" / f"x{i}.png").write_bytes(synthetic_png)
  (raw / "labels.csv").write_text("file,label\nNormal/x0.png,0\nNormal/x1.png,tb\nx2.png,normal\n")
  with caplog.at_level(logging.WARNING):
    layout, found = films.find(os.fspath(raw))
  assert layout == "csv" and [f.label for f in found] == [0, 1, 0]
  assert "Normal/x1.png: abnormal in the CSV, normal by name" in caplog.text


def _write_csv_site(tmp_path, rows: str, files=("a.png", "b.png")):
  raw = tmp_path / "raw"
  raw.mkdir(exist_ok=True)
  for name in files:
    (raw / name).write_bytes(tf.io.encode_png(np.zeros((64, 64, 1), np.uint8)).numpy())
  (raw / "labels.csv").write_text(rows)
  return os.fspath(raw)


@pytest.mark.parametrize(
  "rows,message",
  [
    ("file,label\na.png,0\nb.png,maybe\n", r"row 3 \(b.png\): label 'maybe' is neither"),
    ("file,label\na.png,0\na.png,1\n", r"row 3: a.png is listed twice \(also row 2\)"),
    ("file,label\na.png,0\nb.png,1\nc.png,1\n", r"1 row\(s\) name a film that is not .* c.png"),
    ("file,label,subject\na.png,0,P1\nb.png,1,P1\n", r"same patient \(P1\) is also filed as"),
    ("name,label\na.png,0\n", "no file column"),
    ("file,label,age\na.png,0,old\nb.png,1,\n", r"age 'old'"),
    ("file,label\n,0\n", "row 2: no file name"),
  ],
)
def test_csv_refusals_name_the_file_and_the_fix(tmp_path, rows, message):
  with pytest.raises(ValueError, match=message):
    films.find(_write_csv_site(tmp_path, rows))


def test_a_film_without_a_row_is_left_out_with_a_warning(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    _, found = films.find(_write_csv_site(tmp_path, "file,label\na.png,0\n"))
  assert [f.name for f in found] == ["a.png"]
  assert "1 films under the manual dir are not in labels.csv and are left out, e.g. b.png" in (
    caplog.text
  )


@pytest.mark.parametrize(
  "names,message",
  [
    (["SITE_0001_0.png", "SITE_0002.png"], r"SITE_0002.png: expected a name ending _0"),
    (["Normal/a.png", "b.png"], r"b.png: no label: put it under a normal/ or abnormal/"),
    (["Normal/SITE_0001_1.png"], r"filed under normal but its name ends _1"),
    (["SITE_0001_0.png", "other/SITE_0001_1.png"], "same patient .* with the other label"),
    (["Normal/x/Abnormal/a.png"], "under both a normal and an abnormal folder"),
  ],
)
def test_name_and_folder_refusals(tmp_path, names, message):
  raw = tmp_path / "raw"
  for name in names:
    (raw / name).parent.mkdir(parents=True, exist_ok=True)
    (raw / name).write_bytes(tf.io.encode_png(np.zeros((64, 64, 1), np.uint8)).numpy())
  with pytest.raises(ValueError, match=message):
    films.find(os.fspath(raw))


def test_ages_in_dicom_form_and_the_split_keeps_a_patients_films_together(tmp_path):
  assert [films.parse_age(v, "x") for v in ("45", "045Y", "018M", "003W", "400D", "")] == [
    45, 45, 1, 0, 1, -1,
  ]  # fmt: skip
  raw, truth = _site(tmp_path, "csv", n=60)
  _, found = films.find(os.fspath(raw))
  by_subject = {}  # The builder's grouping: the NLM builders' hash of the subject.
  for split, members in nlm_tb.split_by_subject(found, lambda f: f.subject, raw).items():
    for film in members:
      by_subject.setdefault(film.subject, set()).add(split)
      assert split == nlm_tb.split_of(film.subject)
  assert sum(len(f) for f in by_subject.values()) == len(by_subject)  # One split per patient.
  assert len(by_subject) < len(found)  # Some patients have two films.


def _examples(data_dir):
  builder = tfds.builder_from_directory(os.fspath(data_dir / "local_cxr" / "512" / "1.0.0"))
  rows = tfds.as_numpy(builder.as_dataset(split="all"))
  return builder, {r["image/filename"].decode(): r for r in rows}


@pytest.mark.heavy
def test_tfds_build_with_and_without_beam_workers_then_load_without_txr(tmp_path):
  """The build in-process, and by `tfds build` on two Beam worker processes: the same examples."""
  raw, truth = _site(tmp_path, "csv", "dicom", n=30)
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(raw))
  lcb.Builder(config="512", data_dir=os.fspath(tmp_path / "one")).download_and_prepare(
    download_config=config
  )
  # The README's command: `tfds build` loads the builder from its folder, so what Beam sends
  # to its worker processes must live in an importable module (films.example).
  tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
  subprocess.run(
    [tfds_cli, "build", "txr_data/local_cxr", f"--manual_dir={raw}", "--config=512",
     f"--data_dir={tmp_path / 'two'}",
     "--beam_pipeline_options=direct_num_workers=2,direct_running_mode=multi_processing"],
    cwd=REPO, check=True, capture_output=True,
  )  # fmt: skip
  builder, one = _examples(tmp_path / "one")
  _, two = _examples(tmp_path / "two")
  assert sorted(one) == sorted(two) == sorted(truth)
  for name, row in one.items():
    other = two[name]
    assert hashlib.sha1(row["image"]).digest() == hashlib.sha1(other["image"]).digest()
    assert (row["label"], row["subject"].decode(), row["age"], row["view"]) == (
      truth[name]["label"], truth[name]["subject"], truth[name]["age"],
      VIEWS_INDEX[truth[name]["view"]],
    )  # fmt: skip
    assert row["fold"] == nlm_tb.fold_of(truth[name]["subject"])
    # The stored pixels are the DICOM's, as txr-predict-lite reads them.
    expected = dicom.to_gray((raw / name).read_bytes())
    np.testing.assert_array_equal(row["image"][..., 0], expected)
  assert builder.info.splits["train"].num_examples + builder.info.splits[
    "validation"
  ].num_examples + builder.info.splits["test"].num_examples == len(truth)
  bare = (
    "import sys, tensorflow_datasets as tfds\n"
    f"b = tfds.builder_from_directory({os.fspath(tmp_path / 'one/local_cxr/512/1.0.0')!r})\n"
    "n = sum(1 for _ in b.as_dataset(split='all'))\n"
    "assert not any(m.startswith('txr') for m in sys.modules), 'txr was imported'\n"
    "print(n, b.info.features['view'].names)\n"
  )
  out = subprocess.run([sys.executable, "-c", bare], cwd=tmp_path, check=True,
                       capture_output=True, text=True).stdout  # fmt: skip
  assert f"{len(truth)} ['PA', 'AP', 'LL', 'RL', 'other', 'unknown']" in out


def test_jpeg_films_are_stored_upright_in_gray(tmp_path):
  pixels = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (80, 1))[..., None]
  jpeg = tf.io.encode_jpeg(pixels, quality=100).numpy()
  stored = tf.io.decode_png(image_codec.normalise(jpeg, "x.jpg", "jpeg", 512)).numpy()
  assert stored.shape == (80, 64, 1)
  assert np.abs(stored.astype(int) - pixels).max() <= 2
  with pytest.raises(image_codec.BadImageError, match="x.jpg: not a JPEG file"):
    image_codec.normalise(b"GIF89a" + bytes(100), "x.jpg", "jpeg")


def test_a_bad_dicom_film_fails_the_conversion_by_name(tmp_path):
  bad = tmp_path / "x.dcm"
  bad.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
  film = films.Film(path=os.fspath(bad), name="x.dcm", kind="dicom", label=0, subject="s")
  with pytest.raises(image_codec.BadImageError, match=f"{bad}: DICOM file without pixel data"):
    films.example(film, 512)
