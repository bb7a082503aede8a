"""The session's trained run: resumed after a kill, exported, evaluated, predicted with.

Heavy: uses the trained (killed and resumed) run from conftest. Every test that
reads it lives in this file, the trainer's resume and export checks too:
pytest-xdist (`--dist loadfile`) runs a file on one worker, so the run trains once.
"""

import io
import json
import os
from pathlib import Path
import subprocess
import sys

from conftest import REPO
from conftest import TINY
from conftest import TRAIN
from conftest import dicom_bytes
from conftest import run_ok
import numpy as np
import pytest
import tensorflow as tf

from txr_data.shenzhen_cxr import synthetic
from txr_model import metrics
from txr_model import model_card
from txr_model import predict
from txr_model import report_files
from txr_model import run_dir

pytestmark = pytest.mark.heavy

LOCK = ".txr.lock"  # model_dir_lock.FILE: txr-evaluate takes (and so rewrites) it


def _png(array) -> bytes:
  return tf.io.encode_png(np.asarray(array, np.uint8)).numpy()


def _evaluate(model_dir, *flags):
  """Runs txr-evaluate; returns its printed JSON, with the run's own files checked untouched."""
  before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file() and p.name != LOCK}
  out = run_ok([sys.executable, "-m", "txr_model.evaluate", f"--model_dir={model_dir}", *flags])
  assert all(p.read_bytes() == data for p, data in before.items())
  assert "txr-evaluate: " in out.stderr and "At the triage threshold" in out.stderr
  return json.loads(out.stdout)  # JSON alone


def test_resume_continues_at_the_next_epoch_through_both_phases(resumed_run):
  import re

  import keras

  from txr_model import augmentation  # noqa: F401  (registers the Augment layer)
  from txr_model import model as model_lib

  model_dir, done, log = resumed_run
  epochs = [line.split()[1] for line in log.splitlines() if line.startswith("Epoch ")]
  assert epochs == [f"{e}/4" for e in range(done + 1, 5)] + ["5/5"]
  # The augmentation's random stream went on from where the killed run left it: the
  # saved model (the best epoch's weights) has drawn once per step of every epoch up to
  # the best one, those before the kill included (it used to start again at 0).
  steps = int(re.search(r"Phase head: epochs \d+-4, (\d+) steps each", log).group(1))
  best = json.loads((model_dir / "best.weights.h5.json").read_text())["epoch"]
  model = keras.saving.load_model(model_dir / "model.keras")
  state = model.get_layer(model_lib.AUGMENT).seed_generator.state.numpy()
  assert int(state[1]) == best * steps, (state, best, steps, done)


def test_outputs_and_export_match_the_keras_model(resumed_run):
  import keras
  import tensorflow as tf

  from txr_data import geometry
  from txr_data import image_codec
  from txr_model import augmentation  # noqa: F401  (registers the Augment layer model.keras holds)

  model_dir, _, log = resumed_run
  for name in ("flags.cfg", "model.keras", "export/saved_model.pb", "finished.json"):
    assert (model_dir / name).exists(), name
  assert list((model_dir / "logs").rglob("events.out.tfevents.*"))
  flagfile = (model_dir / "flags.cfg").read_text()
  assert f"--model_dir={model_dir}" in flagfile and "--epochs=4" in flagfile
  report = json.loads((model_dir / "metrics.json").read_text())
  assert set(report) == {"validation", "test", "run", "protocol"}
  assert report["protocol"]["thresholds_from"] == {
    "dataset": "shenzhen_cxr/512", "split": "validation", "n": 9
  }  # fmt: skip
  assert report["test"]["calibration"]["n"] == 10 and "Calibration: ECE" in log
  assert (model_dir / "reliability.png").exists() and (model_dir / "scores_test.csv").exists()
  # Evaluated and exported: the best validation AUC's weights, named in the report.
  assert report["run"]["weights"].startswith("best: epoch ")
  best = json.loads((model_dir / "best.weights.h5.json").read_text())
  assert report["run"]["weights"] == f"best: epoch {best['epoch']}, val AUC {best['val_auc']:.4f}"
  # The AUC is that of the 10 test images' scores in scores_test.csv, each image once.
  labels, scores, _, names = report_files.read_scores(str(model_dir / "scores_test.csv"))
  assert report["test"]["n"] == 10 == len(set(names)) == len(names)
  assert report["test"]["auc"] == pytest.approx(metrics.roc_auc(labels, scores), abs=1e-12)
  assert "Dataset shenzhen_cxr/512" in log and "1 replica(s), global batch 8" in log
  assert f"Wrote {model_dir / 'export'}" in log
  # Subgroups of the 10 test images (no sex difference in the sample): each group's N, and
  # none named, since none has 10 images of a class.
  for attribute in ("sex", "age"):
    groups = report["test"]["subgroups"][attribute]
    assert sum(g["n"] for g in groups.values()) == 10 and all(g["too_few"] for g in groups.values())
    # No bare AUC (a group of the same images as another says which).
    assert all(set(g) - {"same_as"} == {"n", "n_positive", "too_few"} for g in groups.values())
  assert "  No subgroup could be compared with the rest" in log and "Weakest subgroup" not in log
  # The model card, beside metrics.json and in the export, is rendered from metrics.json alone.
  card = (model_dir / "MODEL_CARD.md").read_text()
  assert card == model_card.render(report) == (model_dir / "export" / "MODEL_CARD.md").read_text()
  assert f"- weights evaluated and exported: {report['run']['weights']}" in card
  data = report["run"]["training_data"]
  assert {split: data[split]["n"] for split in data} == {"train": 45, "validation": 9, "test": 10}
  assert sum(data["train"]["sex"].values()) == 45 and report["run"]["ood"]["n_train"] == 45

  png = (
    model_dir.parent / "x.png"
  )  # a 16-bit, non-square image: the export must handle it like training data
  gray = np.linspace(0, 65535, 120 * 90).reshape(120, 90).astype(np.uint16)
  png.write_bytes(tf.io.encode_png(gray[..., None]).numpy())
  data = png.read_bytes()
  serving = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
  served = serving(image_bytes=tf.constant([data, data]))["probability"].numpy()
  model = keras.models.load_model(model_dir / "model.keras")
  stored = image_codec.normalise_png(data, "x.png", 512)  # as the builder stores it
  size = model.input_shape[1]
  x = geometry.resize_to_square(tf.io.decode_png(stored, channels=1), size)[None]
  expected = model.predict(x, verbose=0)[0, 0]
  np.testing.assert_allclose(served, [expected, expected], rtol=1e-5, atol=1e-6)


def test_evaluate_cli_takes_thresholds_from_validation(resumed_run):
  model_dir, _, _ = resumed_run
  printed = _evaluate(model_dir)
  out_dir = model_dir / "evaluation" / "shenzhen_cxr_512_test"
  report = json.loads((out_dir / "metrics.json").read_text())
  assert printed == {"test": report["test"], "protocol": report["protocol"]}
  run = json.loads((model_dir / "metrics.json").read_text())["test"]  # the same model and images
  assert report["test"]["n"] == run["n"] and report["test"]["auc"] == pytest.approx(run["auc"])
  for point in ("youden", "triage"):
    test_point = report["test"]["operating_points"][point]
    assert test_point["threshold"] == report["validation"]["operating_points"][point]["threshold"]
    assert sum(test_point[k] for k in ("tp", "fp", "tn", "fn")) == report["test"]["n"] == 10
  low, high = report["test"]["auc_ci95"]
  assert low <= report["test"]["auc"] <= high
  calibration = report["test"]["calibration"]
  assert calibration["n"] == 10 and sum(b["n"] for b in calibration["bins"]) == 10
  assert 0.0 <= calibration["ece"] <= 1.0
  for name in ("roc.png", "reliability.png"):
    assert (out_dir / name).read_bytes().startswith(b"\x89PNG")
  assert len((out_dir / "scores_test.csv").read_text().splitlines()) == 1 + 10
  assert (out_dir / "MODEL_CARD.md").read_text() == model_card.render(report)
  assert (
    report["run"]["training_data"]
    == json.loads((model_dir / "metrics.json").read_text())["run"]["training_data"]
  )  # the card of an evaluation says what the model trained on
  assert list((out_dir / "logs" / "evaluation").glob("events.out.tfevents.*"))


def test_cross_site_evaluation_applies_the_training_sites_thresholds(resumed_run):
  model_dir, _, _ = resumed_run
  run = json.loads((model_dir / "metrics.json").read_text())
  # A site's own age bands, not the run's.
  bands = "--age_bands=0-39,40+"
  printed = _evaluate(model_dir, "--dataset=montgomery_cxr/512", "--split=all", bands)
  report = json.loads(
    (model_dir / "evaluation" / "montgomery_cxr_512_all" / "metrics.json").read_text()
  )
  assert printed == {"all": report["all"], "protocol": report["protocol"]}
  assert report["protocol"] == {
    "thresholds_from": {"dataset": "shenzhen_cxr/512", "split": "validation", "n": 9},
    "evaluated": {"dataset": "montgomery_cxr/512", "split": "all", "n": 20},
  }
  for point in ("youden", "triage"):  # chosen on Shenzhen's validation split, applied unchanged
    threshold = run["validation"]["operating_points"][point]["threshold"]
    assert report["all"]["operating_points"][point]["threshold"] == threshold
  assert report["all"]["n"] == 20 and report["all"]["n_positive"] == 10
  card = (model_dir / "evaluation" / "montgomery_cxr_512_all" / "MODEL_CARD.md").read_text()
  assert "**Cross-site:** the model was evaluated on montgomery_cxr/512" in card
  # The training data is counted in the evaluation's bands too, so the card's two tables use
  # one set (the training table kept the run's, 0-17, 18-39, ...).
  assert set(report["all"]["subgroups"]["age"]) <= {"0-39", "40+", "unknown"}
  for split, counts in report["run"]["training_data"].items():
    assert set(counts["age"]) <= {"0-39", "40+", "unknown"}, split
    assert sum(counts["age"].values()) == counts["n"], split
  assert "age 0-39" in card and "age 18-39" not in card
  # Montgomery has lung masks: the share of Grad-CAM energy inside them, per abnormal image.
  energy = report["all"]["grad_cam_lung_energy"]
  # Every abnormal image once: measured, or counted as an all-zero map left out.
  assert energy["n"] >= 1 and energy["n"] + energy["n_all_zero"] == report["all"]["n_positive"]
  assert 0.0 < energy["mask_share"] < 1.0


def test_tensorboard_has_curves_and_grad_cam_overlays(resumed_run):
  model_dir, _, _ = resumed_run
  tags = set()
  for path in (model_dir / "logs" / "evaluation").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  assert {"test/roc_curve", "test/pr_curve", "test/auc", "validation/grad_cam"} <= tags
  assert {"test/ece", "test/reliability_diagram"} <= tags


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Held-out chest-X-ray-like images (a seed the sample never used), colour images, bad files."""
  folder = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(12345)
  for i in range(20):
    (folder / f"cxr_{i:02d}.png").write_bytes(
      _png(synthetic.chest_xray(rng, abnormal=bool(i % 2))[..., None])
    )
  y, x = np.mgrid[0:120, 0:160] / np.array([120.0, 160.0])[:, None, None]
  colour = {
    "gradient": np.stack([x, y, 1 - x], -1) * 255,
    "stripes": np.stack([np.sin(20 * x) > 0, np.cos(15 * y) > 0, x > 0.5], -1) * 255,
    "noise": rng.uniform(0, 255, (120, 160, 3)),
    "blobs": np.stack([np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) * 20)] * 3, -1) * [255, 180, 40],
  }
  for name, rgb in colour.items():
    (folder / f"colour_{name}.png").write_bytes(_png(rgb))
    (folder / f"colour_{name}.jpg").write_bytes(tf.io.encode_jpeg(np.uint8(rgb)).numpy())
  cxr = (folder / "cxr_00.png").read_bytes()
  (folder / "bad_truncated.png").write_bytes(cxr[: len(cxr) // 2])
  (folder / "bad_text.png").write_bytes(b"this is not an image\n")
  header = cxr[:16] + (200_000).to_bytes(4, "big") * 2 + cxr[24:]
  (folder / "bad_huge.png").write_bytes(header)
  (folder / "sixteen_bit.png").write_bytes(
    tf.io.encode_png(np.uint16(np.linspace(0, 65535, 90 * 100).reshape(90, 100, 1))).numpy()
  )
  film = synthetic.chest_xray(np.random.default_rng(7), abnormal=True)
  (folder / "cxr_dicom.dcm").write_bytes(dicom_bytes(np.uint16(film) * 16))
  (folder / "bad_gif.png").write_bytes(_gif(film))
  return folder


def _gif(array) -> bytes:
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(np.uint8(array)).save(buf, format="GIF")
  return buf.getvalue()


def test_ood_flags_colour_images_and_negatives_and_passes_held_out_xrays(
  resumed_run, inputs, tmp_path
):
  model_dir, _, _ = resumed_run
  files, _ = predict.find_images([str(inputs)])
  results = {r["file"].rsplit("/", 1)[-1]: r for r in predict.predict_files(
    str(model_dir / "export"), [f for f in files if "bad" not in f and "dcm" not in f]
  )}  # fmt: skip
  colour = [r for name, r in results.items() if name.startswith("colour_")]
  xrays = [r for name, r in results.items() if name.startswith("cxr_")]
  assert len(colour) == 8 and len(xrays) == 20
  colour_rate = np.mean([r["out_of_distribution"] for r in colour])
  xray_rate = np.mean([r["out_of_distribution"] for r in xrays])
  print(f"OOD flagged: colour images {colour_rate:.0%}, held-out X-ray-like {xray_rate:.0%}")
  assert colour_rate == 1.0
  assert xray_rate <= 0.2
  assert all(0.0 <= r["probability"] <= 1.0 for r in results.values())
  # Their negatives (a MONOCHROME1 export left uninverted) are flagged, by the polarity rule.
  negatives = tmp_path / "negatives"
  negatives.mkdir()
  for i in range(4):
    film = tf.io.decode_png((inputs / f"cxr_{i:02d}.png").read_bytes()).numpy()
    (negatives / f"negative_{i}.png").write_bytes(_png(255 - film))
  flagged = predict.predict_files(str(model_dir / "export"), sorted(map(str, negatives.iterdir())))
  assert [r["out_of_distribution"] for r in flagged] == [True] * 4


def test_predict_cli_reports_bad_files_and_carries_on(resumed_run, inputs, tmp_path):
  model_dir, _, _ = resumed_run
  base = [sys.executable, "-m", "txr_model.predict", f"--export_dir={model_dir / 'export'}"]
  explain_dir = tmp_path / "explain"
  out = subprocess.run(
    [*base, "--format=json", "--explain", f"--explain_dir={explain_dir}", str(inputs)],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 1, out.stderr[-3000:]
  results = {r["file"].rsplit("/", 1)[-1]: r for r in json.loads(out.stdout)}
  assert len(results) == 20 + 8 + 4 + 1 + 1
  errors = {name: r["error"] for name, r in results.items() if "error" in r}
  assert set(errors) == {"bad_truncated.png", "bad_text.png", "bad_huge.png", "bad_gif.png"}
  assert "too large" in errors["bad_huge.png"] and "not a PNG, JPEG" in errors["bad_text.png"]
  assert errors["bad_gif.png"] == "not a PNG, JPEG or DICOM file"
  assert errors["bad_truncated.png"] == "cannot decode: corrupt or truncated image data"
  assert "4 of 34 file(s) failed" in out.stderr
  assert results["sixteen_bit.png"]["label"] in ("normal", "abnormal")
  assert results["cxr_dicom.dcm"]["label"] in ("normal", "abnormal")
  overlay = tf.io.decode_png((explain_dir / "cxr_03.png.gradcam.png").read_bytes())
  assert overlay.shape == (32, 32, 3)  # the model's input size (conftest.TINY)
  assert len(list(explain_dir.glob("*.png"))) == 30

  table = run_ok([*base, str(inputs / "cxr_01.png"), str(inputs / "colour_noise.jpg")]).stdout
  assert table.splitlines()[0].split()[:3] == ["file", "probability", "label"]
  assert len(table.splitlines()) == 4
  assert table.splitlines()[-1].startswith("label: abnormal when probability >= ")


def test_serving_signature_answers_each_element(resumed_run, inputs):
  """A TF Serving client's batch with bad elements: the good ones are answered as if alone."""
  model_dir, _, _ = resumed_run
  serve = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
  good = (inputs / "cxr_01.png").read_bytes()
  batch = [good, b"garbage", b"", good[: len(good) // 2], _gif(np.zeros((8, 8), np.uint8))]
  out = serve(image_bytes=tf.constant(batch))
  alone = serve(image_bytes=tf.constant([good]))
  errors = [e.decode() for e in out["error"].numpy()]
  assert errors[0] == "" and all(errors[1:]), errors
  assert float(out["probability"][0]) == pytest.approx(float(alone["probability"][0]), abs=1e-5)
  assert out["probability"].numpy()[1:].tolist() == [-1.0] * 4
  assert out["label"].numpy()[1:].tolist() == [-1] * 4
  assert out["probability"].dtype == tf.float32


def test_a_finished_run_keeps_what_users_need_and_a_rerun_has_nothing_to_do(resumed_run):
  import zipfile

  import h5py
  import keras

  model_dir, _, _ = resumed_run
  # Resuming is over: its state is gone; the best record stays beside the report.
  for name in ("backup", "best.weights.h5", "feature_cache"):
    assert not (model_dir / name).exists(), name
  assert (model_dir / "best.weights.h5.json").exists()
  with zipfile.ZipFile(model_dir / "model.keras") as keras_file:
    with keras_file.open("model.weights.h5") as f, h5py.File(f) as weights:
      assert "layers" in weights and "optimizer" not in weights  # no optimizer state
  # The export holds each weight once, and the OOD detector's mean and precision.
  from txr_model import augmentation  # noqa: F401  (registers the Augment layer)

  params = keras.models.load_model(model_dir / "model.keras").count_params()
  stored = tf.train.list_variables(str(model_dir / "export" / "variables" / "variables"))
  d = keras.models.load_model(model_dir / "model.keras").get_layer("pool").output.shape[-1]
  assert sum(int(np.prod(shape)) for _, shape in stored) <= params + d + d**2 + 16
  # The same command again (flags.cfg): nothing trained, evaluated or exported again, and
  # what another command added to export/ (txr-export-lite's files) stays.
  added = model_dir / "export" / "model_int8.json"
  added.write_text("{}")
  before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file() and p.suffix != ".lock"}
  out = run_ok([*TRAIN, f"--flagfile={model_dir / 'flags.cfg'}"])
  assert "finished before (finished.json); nothing to do" in out.stderr
  assert "Epoch " not in out.stdout and "Test AUC" in out.stdout  # the report, read back
  after = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file() and p.suffix != ".lock"}
  assert after == before
  added.unlink()


def test_a_finished_run_exported_by_an_older_txr_is_exported_again_untrained(resumed_run, tmp_path):
  """Its predictors refuse the old format ("export again"): its own command does that."""
  import shutil

  from absl import app

  from txr_lite import contract

  model_dir = tmp_path / "run"
  shutil.copytree(resumed_run[0], model_dir)
  meta_path = model_dir / "export" / contract.SAVED_MODEL_METADATA
  old = json.loads(meta_path.read_text())
  meta_path.write_text(json.dumps({**old, "format": contract.FORMAT - 1}))
  with pytest.raises(app.UsageError, match="written by an older txr; export again"):
    predict.read_metadata(str(model_dir / "export"))
  model = (model_dir / "model.keras").read_bytes()
  out = run_ok([*TRAIN, f"--flagfile={model_dir / 'flags.cfg'}", f"--model_dir={model_dir}"])
  assert f"metadata format {contract.FORMAT - 1}, which this txr's predictors refuse" in out.stderr
  assert "Epoch " not in out.stdout and "Test AUC" in out.stdout
  assert (model_dir / "model.keras").read_bytes() == model  # not trained
  assert predict.read_metadata(str(model_dir / "export")).format == contract.FORMAT
  assert json.loads(meta_path.read_text())["thresholds"] == old["thresholds"]


def test_a_sites_own_films_evaluated_then_fine_tuned_from_the_run(resumed_run, tmp_path):
  """local_cxr end to end: txr-train --init_from on a site's films, txr-evaluate on all of them."""
  import keras

  from txr_data.local_cxr import synthetic as site_synthetic
  from txr_model import augmentation  # noqa: F401  (registers the Augment layer)

  parent, _, _ = resumed_run
  raw, data_dir = tmp_path / "raw", tmp_path / "data"
  truth = site_synthetic.write_site(os.fspath(raw), 40, "csv", "png", seed=3)
  child = tmp_path / "child"
  args = [*TRAIN, *TINY, f"--init_from={parent}", "--dataset=local_cxr/512",
          f"--data_dir={data_dir}", "--mode=end_to_end", "--weights=none", "--epochs=1",
          "--learning_rate=0", "--weight_decay=0"]  # fmt: skip
  # Another image size than the parent's is refused before anything is made.
  refused = subprocess.run([*args, "--image_size=48", f"--model_dir={child}"], cwd=REPO,
                           capture_output=True, text=True)  # fmt: skip
  assert refused.returncode == 2 and not child.exists()
  assert "its model is mobilenet_v3_small at 32 px, this run's mobilenet_v3_small at 48 px" in (
    refused.stderr
  )
  run_ok([*args, f"--manual_dir={raw}", f"--model_dir={child}"])  # builds local_cxr/512 first
  # The parent on every film of the site, built by that run.
  printed = _evaluate(parent, "--dataset=local_cxr/512", f"--data_dir={data_dir}", "--split=all")
  assert printed["all"]["n"] == len(truth)
  assert printed["all"]["n_positive"] == sum(row["label"] for row in truth)
  # Read from another data_dir than the run's: a folder of its own, named by that data_dir,
  # so a second site's local_cxr/512 would not replace this one's figures.
  (folder,) = (parent / "evaluation").glob("local_cxr_512_all*")
  assert folder == Path(run_dir.evaluation_dir(str(parent), "local_cxr/512", "all", str(data_dir)))
  assert folder.name != "local_cxr_512_all"
  report = json.loads((folder / "metrics.json").read_text())
  assert {"site", "view", "sex", "age"} <= set(report["all"]["subgroups"])
  # With a learning rate of 0 every trained weight is the parent's: the run started from it
  # (a new head starts at zero). BatchNorm's moving statistics do move in training mode.
  mine = keras.models.load_model(child / "model.keras")
  theirs = keras.models.load_model(parent / "model.keras")
  kernel = theirs.get_layer("tb_probability").kernel.numpy()
  assert np.abs(kernel).max() > 0
  theirs_by_path = {w.path: w.numpy() for w in theirs.weights}
  assert len(theirs_by_path) == len(theirs.weights)
  for weight in mine.trainable_weights:
    np.testing.assert_array_equal(weight.numpy(), theirs_by_path[weight.path], err_msg=weight.path)
  config = json.loads((child / "run_config.json").read_text())
  report = json.loads((child / "metrics.json").read_text())
  assert config["init_from"] == str(parent)
  assert report["run"]["init_from"]["run"] == str(parent)
  assert report["run"]["init_from"]["dataset"] == "shenzhen_cxr/512"
  card = (child / "MODEL_CARD.md").read_text()
  assert f"initial weights: the model of the run at {parent}" in card
  assert "fine-tuned from (the parent run's dataset): shenzhen_cxr/512" in card


def test_predict_with_a_site_profile_and_intake_checks(resumed_run, tmp_path):
  """txr-calibrate on the export's own scores, txr-predict --site, a lateral DICOM refused."""
  import csv

  from txr_lite import calibrate

  model_dir, _, _ = resumed_run
  export = model_dir / "export"
  films = tmp_path / "films"
  rng = np.random.default_rng(99)
  for i in range(16):
    folder = films / ["normal", "abnormal"][i % 2]
    folder.mkdir(parents=True, exist_ok=True)
    film = synthetic.chest_xray(rng, abnormal=bool(i % 2))
    (folder / f"f{i}.png").write_bytes(_png(film[..., None]))
  base = [sys.executable, "-m", "txr_model.predict", f"--export_dir={export}"]
  from txr_lite import rows as rows_lib

  paths = sorted(str(p) for p in films.rglob("*.png"))
  with open(tmp_path / "scores.csv", "w") as f:  # What --format=csv prints, in this process.
    printer = rows_lib.Printer("csv", paths, out=f)
    for result in predict.predict_files(str(export), paths):
      printer.add(result)
  assert calibrate.main([f"--scores={tmp_path / 'scores.csv'}", f"--model={export}",
                         "--prevalence=0.1", f"--out={tmp_path / 'site'}",
                         "--target_sensitivity=0.5"]) == 0  # fmt: skip
  profile = json.loads((tmp_path / "site" / "site_profile.json").read_text())
  lateral = synthetic.chest_xray(np.random.default_rng(7), abnormal=True)
  (films / "lateral.dcm").write_bytes(dicom_bytes(np.uint16(lateral) * 16, ViewPosition="LL"))
  site = f"--site={tmp_path / 'site' / 'site_profile.json'}"
  out = subprocess.run([*base, site, "--format=csv", str(films)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
  assert out.returncode == 1  # the refused film counts as failed
  rows = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader(out.stdout.splitlines())}
  assert rows["lateral.dcm"]["error"].startswith("refused (lateral view): ViewPosition LL")
  assert rows["lateral.dcm"]["probability"] == ""
  for name, row in rows.items():
    if name != "lateral.dcm":
      expected = "abnormal" if float(row["probability"]) >= profile["threshold"] else "normal"
      assert row["label"] == expected, name
  assert "txr-predict: 17 file(s): 16 scored," in out.stderr
  assert "(lateral view: 1)" in out.stderr and "this site's profile expects" in out.stderr
  # A profile of another model is refused in one line, naming both fingerprints.
  (tmp_path / "other.json").write_text(
    (tmp_path / "site" / "site_profile.json").read_text().replace("sha256:", "sha256:0")
  )
  other = subprocess.run([*base, f"--site={tmp_path / 'other.json'}", str(films)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
  assert other.returncode == 2 and "was made for another model" in other.stderr
