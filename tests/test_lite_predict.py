"""txr-predict-lite: its rows, formats and refusals, on a tiny converted network; no TensorFlow.

The network is a few layers with txr's inputs and outputs, converted by
TFLiteConverter as litert.py converts InceptionV3 (tests/test_learning.py
checks the real model's scores); the predictor runs in a process that must
never import TensorFlow.
"""

import json
import subprocess
import sys

from conftest import REPO
from conftest import metadata
from conftest import png_bytes
import numpy as np
import pytest

from txr_lite import contract

SIZE = 32
# Runs txr-predict-lite's main, then fails if anything imported TensorFlow.
_PREDICT = (
  "import sys; from txr_lite import predict; code = predict.main(sys.argv[1:]);"
  " assert 'tensorflow' not in sys.modules, 'txr-predict-lite imported TensorFlow'; sys.exit(code)"
)


def _predict_lite(*args):
  return subprocess.run(
    [sys.executable, "-c", _PREDICT, *map(str, args)], cwd=REPO, capture_output=True, text=True
  )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  """A float32 .tflite with txr's signature (converted by litert.convert), its metadata and OOD.

  Also writes the float16 variant beside it, from the same conversion.
  """
  import keras

  from txr_model import litert
  from txr_model import model as model_lib
  from txr_model import ood

  keras.utils.set_random_seed(0)
  image = keras.Input((SIZE, SIZE, 1), dtype="uint8", name="image")
  x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
  x = keras.layers.Conv2D(8, 3, activation="relu")(x)
  pooled = keras.layers.GlobalAveragePooling2D(name=model_lib.POOL)(x)
  probability = keras.layers.Dense(1, activation="sigmoid", name=model_lib.CLASSIFIER)(pooled)
  model = keras.Model(image, probability)  # txr's shape: uint8 gray in, P(TB) out
  net = litert.network(model)
  flatbuffers = litert.convert(model, ["float32", "float16"])
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, SIZE, SIZE, 1)).astype(np.uint8)
  features = net.predict(images, verbose=0)["features"]
  detector = ood.fit(features[:30], features[30:])
  export_dir = tmp_path_factory.mktemp("export")
  for variant, flatbuffer in flatbuffers.items():
    meta = metadata(
      variant=variant, image_size=SIZE, max_side=64, thresholds={contract.TRIAGE: 0.5},
      ood_threshold=detector["threshold"],
    )  # fmt: skip
    litert.write_variant(contract.lite_files(str(export_dir), variant), meta, flatbuffer, detector)
  return export_dir / "model_float32.tflite", net


def _scans(tmp_path):
  scans = tmp_path / "scans"
  scans.mkdir()
  rng = np.random.default_rng(1)
  film = rng.integers(0, 256, (80, 70), np.uint8)
  (scans / "a_good.png").write_bytes(png_bytes(film))
  (scans / "b_truncated.png").write_bytes(png_bytes(film)[:60])
  (scans / "c_text.png").write_bytes(b"this is not an image")
  (scans / "d_blank.png").write_bytes(png_bytes(np.full((80, 70), 7, np.uint8)))
  (scans / "e_icon.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
  (scans / "f_good.jpg").write_bytes(_jpeg(film))
  return scans, film


def _jpeg(array):
  import io

  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def test_rows_name_each_bad_file_and_the_others_are_scored(tiny_model, tmp_path):
  from txr_lite import preprocess

  path, net = tiny_model
  scans, film = _scans(tmp_path)
  out = _predict_lite(f"--model={path}", "--format=json", scans)
  assert out.returncode == 1, out.stderr  # Some files failed; every one has its row.
  rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)}
  assert sorted(rows) == ["a_good.png", "b_truncated.png", "c_text.png", "d_blank.png",
                          "e_icon.png", "f_good.jpg"]  # fmt: skip
  assert "truncated" in rows["b_truncated.png"]["error"]
  assert "not a PNG, JPEG or DICOM" in rows["c_text.png"]["error"]
  assert "blank image" in rows["d_blank.png"]["error"]
  assert "too small" in rows["e_icon.png"]["error"]
  assert "txr-predict-lite: 4 of 6 file(s) failed." in out.stderr
  good = rows["a_good.png"]
  assert set(good) == {"file", "probability", "label", "out_of_distribution", "ood_score"}
  # The score is the network's on the pixels the serving graph would give it.
  pixels = preprocess.prepare(png_bytes(film), SIZE, 64).image
  expected = float(net.predict(pixels[None], verbose=0)["probability"][0, 0])
  assert good["probability"] == pytest.approx(expected, abs=1e-5)
  assert good["label"] == ("abnormal" if expected >= 0.5 else "normal")
  assert 0.0 <= rows["f_good.jpg"]["probability"] <= 1.0


def test_without_pydicom_a_dicom_file_gets_its_row_and_the_others_are_scored(tiny_model, tmp_path):
  """The intake checks read the tags before the pixels: without pydicom they ended the run
  with an ImportError's traceback, every later row lost."""
  from conftest import dicom_bytes

  path, _ = tiny_model
  scans, _ = _scans(tmp_path)
  (scans / "a_film.dcm").write_bytes(
    dicom_bytes(np.tile(np.arange(0, 4000, 50, np.uint16), (70, 1)))
  )
  hidden = "import sys; sys.modules['pydicom'] = None; "  # `import pydicom` now fails
  out = subprocess.run(
    [sys.executable, "-c", hidden + _PREDICT, f"--model={path}", "--format=json", str(scans)],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)}
  assert len(rows) == 7 and "probability" in rows["a_good.png"]
  assert "pip install 'pydicom>=3'" in rows["a_film.dcm"]["error"]


def test_dicom_files_with_bad_tags_get_their_rows_and_the_json_closes(tiny_model, tmp_path):
  """An empty Rows or a two-valued Columns raised TypeErrors outside the per-file handler:
  4 of 11 rows printed and the JSON left open (the sweep's finding)."""
  import io

  from conftest import dicom_bytes
  import pydicom

  path, _ = tiny_model
  scans, _ = _scans(tmp_path)
  for name, tag, value in (("g_rows.dcm", "Rows", None), ("h_columns.dcm", "Columns", [70, 70])):
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(np.full((80, 70), 2000, np.uint16))))
    ds[tag].value = value
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    (scans / name).write_bytes(buf.getvalue())
  out = _predict_lite(f"--model={path}", "--format=json", scans)
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)}  # closed JSON
  assert len(rows) == 8 and "probability" in rows["a_good.png"]
  assert "Rows is missing or empty" in rows["g_rows.dcm"]["error"]
  assert "Columns holds 2 values, not one" in rows["h_columns.dcm"]["error"]


def test_a_negative_film_and_noise_are_flagged_and_the_film_itself_is_not(tiny_model, tmp_path):
  """An inverted film (a MONOCHROME1 export left as it was), or noise, is scored like a film.

  The detector is switched off (a threshold no distance reaches), so the flags are the
  polarity and smoothness rules' alone.
  """
  import shutil

  from txr_data.shenzhen_cxr import synthetic

  path, _ = tiny_model
  export = tmp_path / "export"
  shutil.copytree(path.parent, export)
  files = contract.lite_files(str(export), "float32")
  raw = json.loads(open(files.metadata).read())
  raw["ood_threshold"] = 1e9
  with open(files.metadata, "w") as f:
    json.dump(raw, f)
  scans = tmp_path / "scans"
  scans.mkdir()
  film = synthetic.chest_xray(np.random.default_rng(5), abnormal=True)
  (scans / "film.png").write_bytes(png_bytes(film))
  (scans / "negative.png").write_bytes(png_bytes(255 - film))
  (scans / "noise.png").write_bytes(
    png_bytes(np.random.default_rng(6).integers(0, 256, (512, 512), np.uint8))
  )
  out = _predict_lite(f"--model={files.tflite}", "--format=json", scans)
  assert out.returncode == 0, out.stderr
  flags = {r["file"].rsplit("/", 1)[1]: r["out_of_distribution"] for r in json.loads(out.stdout)}
  assert flags == {"film.png": False, "negative.png": True, "noise.png": True}


def test_the_float32_and_float16_variants_score_as_keras_does(tiny_model):
  from txr_lite import lite_model

  path, net = tiny_model
  images = np.random.default_rng(2).integers(0, 256, (6, SIZE, SIZE, 1)).astype(np.uint8)
  expected = net.predict(images, verbose=0)
  for variant, tolerance in (("float32", 1e-5), ("float16", 2e-3)):
    loaded = lite_model.load(str(path).replace("float32", variant))
    assert loaded.meta.variant == variant
    probability, features = loaded.model.predict(images)
    np.testing.assert_allclose(probability, expected["probability"][:, 0], atol=tolerance)
    np.testing.assert_allclose(features, expected["features"], atol=tolerance * 10)
    stored = {t["dtype"] for t in loaded.model._interpreter.get_tensor_details()}
    assert (np.float16 in stored) == (variant == "float16")  # its weights in half precision


def test_table_and_csv_print_every_row_and_the_threshold(tiny_model, tmp_path):
  path, _ = tiny_model
  scans, _ = _scans(tmp_path)
  table = _predict_lite(f"--model={path}", scans)
  lines = table.stdout.splitlines()
  assert lines[0].split() == ["file", "probability", "label", "out_of_distribution", "ood_score",
                              "error"]  # fmt: skip
  assert len(lines) == 1 + 6 + 1
  assert lines[-1].startswith("label: abnormal when probability >= 0.5000 (the float32 model's")
  csv_rows = _predict_lite(f"--model={path}", "--format=csv", scans).stdout.splitlines()
  assert len(csv_rows) == 1 + 6 and csv_rows[0].startswith("file,probability,label")


@pytest.mark.parametrize(
  "case, message",
  [
    ("empty_folder", "No PNG, JPEG or DICOM files in"),
    ("no_metadata", "model_float32.json: missing"),
    ("no_detector", "model_float32.ood.npz: missing"),
    ("not_tflite", "not a .tflite file"),
    ("missing_tflite", "model_float32.tflite: no such file (txr-export-lite writes"),
    ("no_paths", "the following arguments are required"),
    ("nan_threshold", "the triage threshold nan is not a probability"),
    ("wrong_size", "image_size 64, but"),
    ("another_network", "model_float32.tflite: not the file"),
    ("truncated_network", "model_float32.tflite: not the file"),
    ("another_detector", "model_float32.ood.npz: not the file"),
    ("damaged_metadata", "model_float32.json: not JSON"),
    ("newer_format", f"metadata format {contract.FORMAT + 1}, written by a newer txr than"),
  ],
)
def test_usage_errors_exit_2_with_one_line(tiny_model, tmp_path, case, message):
  path, _ = tiny_model
  (tmp_path / "empty").mkdir()
  (tmp_path / "scans").mkdir()
  (tmp_path / "scans" / "a.png").write_bytes(png_bytes(np.zeros((40, 40), np.uint8)))
  copy = tmp_path / "model_float32.tflite"
  files = contract.files_of(str(path))
  for source in (files.tflite, files.metadata, files.ood):
    (tmp_path / source.rsplit("/", 1)[1]).write_bytes(open(source, "rb").read())
  mine = contract.files_of(str(copy))
  raw = json.loads(open(mine.metadata).read())
  args = [f"--model={copy}", tmp_path / "scans"]
  if case == "empty_folder":
    args = [f"--model={copy}", tmp_path / "empty"]
  elif case == "no_metadata":
    (tmp_path / "model_float32.json").unlink()
  elif case == "no_detector":
    (tmp_path / "model_float32.ood.npz").unlink()
  elif case == "not_tflite":
    args = [f"--model={tmp_path}", tmp_path / "empty"]
  elif case == "missing_tflite":
    copy.unlink()
  elif case == "no_paths":
    args = [f"--model={copy}"]
  elif case == "nan_threshold":
    raw["thresholds"]["triage"] = raw["threshold"] = float("nan")
  elif case == "wrong_size":
    raw["image_size"] = 64
  elif case == "another_network":
    copy.write_bytes(copy.read_bytes()[:-4] + b"\0\0\0\0")
  elif case == "truncated_network":
    copy.write_bytes(copy.read_bytes()[:1000])
  elif case == "another_detector":
    stats = dict(np.load(mine.ood))
    np.savez(mine.ood, mean=stats["mean"] + 1, precision=stats["precision"])
  elif case == "damaged_metadata":
    (tmp_path / "model_float32.json").write_text('{"format": 4, "vari')
  elif case == "newer_format":
    raw["format"] = contract.FORMAT + 1
  if case in ("nan_threshold", "wrong_size", "newer_format"):
    (tmp_path / "model_float32.json").write_text(json.dumps(raw))
  out = _predict_lite(*args)
  assert out.returncode == 2, out.stderr
  assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
  assert out.stdout == ""  # Refused before any row is printed.


@pytest.mark.heavy
def test_the_small_backbone_converts_and_scores_as_keras_does():
  """litert.convert and the interpreter with MobileNetV3-Small, and its heat maps against Grad-CAM.

  At 96 px its last feature maps are 3 x 3, so a heat map has places to point to (at
  InceptionV3's 75 px, or MobileNetV3's 32, they are 1 x 1: a uniform map). InceptionV3's
  int8 export is checked on a trained model in test_learning.py. DenseNet-121's float32
  conversion passed the same check (within 1e-4), in 44 to 83 s: too slow to run in every
  suite for what the other two already exercise.
  """
  backbone, size = "mobilenet_v3_small", 96
  import keras

  from txr_lite import heatmap
  from txr_lite import lite_model
  from txr_model import export
  from txr_model import litert
  from txr_model import model as model_lib

  keras.utils.set_random_seed(0)
  model = model_lib.build_model(size, "none", mode="end_to_end", backbone=backbone)
  head = model.get_layer(model_lib.CLASSIFIER)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, size, size, 1)).astype(np.uint8)
  # A kernel that spreads the logits (a random base's pooled features are small).
  pooled = model_lib.feature_extractor(model).predict(images, verbose=0)
  kernel = rng.normal(0, 3 / (pooled.std() * np.sqrt(pooled.shape[-1])), head.kernel.shape)
  head.set_weights([kernel, np.zeros(1)])
  flatbuffers = litert.convert(model, ["float32", "int8"], calibration=images)
  expected = model.predict(images, verbose=0)[:, 0]
  # The SavedModel's `explain` signature computes these (Grad-CAM, with a gradient).
  grad_cam, _ = export.grad_cam(model, model_lib.feature_maps(model), images)
  float32 = lite_model.LiteModel(flatbuffers["float32"])
  probability, features, maps = float32.predict(images, class_maps=True)
  assert features.shape == (8, model.get_layer(model_lib.POOL).output.shape[-1])
  np.testing.assert_allclose(probability, expected, atol=1e-4)
  lite = [heatmap.heatmap(m, size) for m in maps]
  pairs = zip(lite, grad_cam.numpy(), strict=True)
  correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in pairs if b.max() > 0]
  assert len(correlations) >= 4 and min(correlations) >= 0.9, correlations
  # A film read abnormal has evidence somewhere (its mean class map is its logit, > 0 with
  # the bias at 0): its heat map is not blank.
  top = int(np.argmax(probability))
  assert probability[top] > 0.5 and lite[top].max() > 0.99
  # int8 converts with every op in int8, class_map included (a random base's int8 scores
  # say little: test_learning.py checks them on a trained model).
  int8 = lite_model.LiteModel(flatbuffers["int8"]).predict(images, class_maps=True)
  assert ((int8[0] >= 0) & (int8[0] <= 1)).all() and int8[2][0].shape == maps[0].shape


def test_a_site_profile_labels_at_its_threshold_and_intake_refuses_a_child(tiny_model, tmp_path):
  """txr-calibrate on the variant's own scores, then --site; a child's DICOM is refused."""
  import csv

  from conftest import dicom_bytes

  path, _ = tiny_model
  films = tmp_path / "films"
  rng = np.random.default_rng(2)
  for i in range(12):
    folder = films / ["normal", "abnormal"][i % 2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"f{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (80, 70), np.uint8)))
  scored = _predict_lite(f"--model={path}", "--format=csv", films)
  assert scored.returncode == 0, scored.stderr
  (tmp_path / "scores.csv").write_text(scored.stdout)
  from txr_lite import calibrate

  assert calibrate.main([f"--scores={tmp_path / 'scores.csv'}", f"--model={path}",
                         "--prevalence=0.2", f"--out={tmp_path / 'site'}",
                         "--target_sensitivity=0.5"]) == 0  # fmt: skip
  profile = json.loads((tmp_path / "site" / "site_profile.json").read_text())
  child = films / "normal" / "child.dcm"
  child.write_bytes(dicom_bytes(rng.integers(0, 4096, (80, 70)), PatientAge="008Y"))
  out = _predict_lite(f"--model={path}", f"--site={tmp_path / 'site' / 'site_profile.json'}",
                      "--format=csv", films)  # fmt: skip
  rows = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader(out.stdout.splitlines())}
  assert rows["child.dcm"]["probability"] == ""  # never a score
  assert rows["child.dcm"]["error"].startswith("refused (under the minimum age): patient aged 8")
  for name, row in rows.items():
    if name != "child.dcm":
      expected = "abnormal" if float(row["probability"]) >= profile["threshold"] else "normal"
      assert row["label"] == expected, name
  assert "txr-predict-lite: 13 file(s): 12 scored," in out.stderr
  assert "refused 1 (7.7%) (under the minimum age: 1)." in out.stderr
  assert "this site's profile expects" in out.stderr
  table = _predict_lite(f"--model={path}", f"--site={tmp_path / 'site' / 'site_profile.json'}",
                        "--min_age=0", films)  # fmt: skip
  assert "child.dcm" in table.stdout and "this site's threshold" in table.stdout
  assert "refused 0 (0.0%)" in table.stderr  # --min_age=0: no age check
  # A profile made for another model (the float16 variant's file) is refused, naming both.
  other = _predict_lite(f"--model={path.with_name('model_float16.tflite')}",
                        f"--site={tmp_path / 'site' / 'site_profile.json'}", films)  # fmt: skip
  assert other.returncode == 2 and "was made for another model" in other.stderr


def test_explain_writes_a_heat_map_overlay_per_scored_film(tiny_model, tmp_path):
  from PIL import Image

  from txr_lite import heatmap
  from txr_lite import lite_model
  from txr_lite import preprocess

  path, net = tiny_model
  scans, film = _scans(tmp_path)
  out = _predict_lite(f"--model={path}", "--explain", f"--explain_dir={tmp_path / 'maps'}",
                      "--format=json", scans)  # fmt: skip
  rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out.stdout)}
  written = sorted(p.name for p in (tmp_path / "maps").iterdir())
  assert written == ["a_good.png.gradcam.png", "f_good.jpg.gradcam.png"]  # scored films only
  assert rows["a_good.png"]["explanation"].endswith("a_good.png.gradcam.png")
  assert Image.open(tmp_path / "maps" / written[0]).size == (SIZE, SIZE)
  # The map is the network's class activation map, as Keras computes it.
  pixels = preprocess.prepare(png_bytes(film), SIZE, 64).image
  _, _, (lite_map,) = lite_model.LiteModel(str(path)).predict(pixels[None], class_maps=True)
  keras_map = net.predict(pixels[None], verbose=0)["class_map"][0, ..., 0]
  np.testing.assert_allclose(lite_map, keras_map, atol=1e-4)
  heat = heatmap.heatmap(lite_map, SIZE)
  assert heat.shape == (SIZE, SIZE) and 0 <= heat.min() and heat.max() <= 1
