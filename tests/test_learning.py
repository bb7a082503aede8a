"""The classifier learns: from scratch, on generated data it was never tuned on.

The lesions of the images whose reading says female are faint (contrast 0.01,
against 0.35), too faint to learn in four epochs: the evaluation must name
women as the weaker subgroup, and no group of the images without the
difference as weaker.

Heavy: generates 662 images, then runs txr-train end_to_end (about 2 minutes on 2 cores).
"""

import json
import re
import sys

from conftest import TRAIN
from conftest import run_ok
import numpy as np
import pytest

pytestmark = pytest.mark.heavy

SEED = 2027  # The demo and every tuning run used seed 0: this draw was never looked at.
# At 0.04 the female AUC reached 0.70 to 0.91 in six epochs, by machine and seed (one run not
# naming women weaker); at 0.01 it stays near chance (0.55) while the others reach 1.0.
FEMALE_LESION_CONTRAST = 0.01
EPOCHS = 4  # The budget the release before the in-model augmentation met (issue 24).


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  root = tmp_path_factory.mktemp("learning")
  raw, data, model = root / "raw", root / "data", root / "model"
  run_ok(
    [sys.executable, "-m", "txr_data.shenzhen_cxr.make_dummy_data", "--num_images=662"]
    + [f"--seed={SEED}", f"--female_lesion_contrast={FEMALE_LESION_CONTRAST}", f"--out={raw}"]
  )
  out = run_ok(
    [*TRAIN, "--mode=end_to_end", "--weights=none", "--image_size=75", "--global_batch_size=16"]
    + [f"--epochs={EPOCHS}", "--dropout=0.3", "--steps_per_execution=1000", f"--seed={SEED}"]
    + [f"--manual_dir={raw}", f"--data_dir={data}", f"--model_dir={model}"]
  )
  return data, model, out.stdout + out.stderr, out.stdout


def test_from_scratch_reaches_auc_0_9_on_held_out_images_with_visible_lesions(learned):
  _, model_dir, log, _ = learned
  report = json.loads((model_dir / "metrics.json").read_text())
  assert report["test"]["n"] == 114
  by_sex = report["test"]["subgroups"]["sex"]
  assert sum(group["n"] for group in by_sex.values()) == 114
  for sex in ("male", "unknown"):  # Full-contrast lesions.
    assert by_sex[sex]["auc"] >= 0.9, by_sex[sex]
  assert report["test"]["auc"] >= 0.75, report["test"]
  assert report["run"]["weights"].startswith("best: epoch ")
  assert "Test AUC" in log and "on 114 held-out images" in log


def test_the_evaluation_names_the_sex_with_faint_lesions_as_weaker(learned):
  _, model_dir, _, printed = learned
  report = json.loads((model_dir / "metrics.json").read_text())
  female = report["test"]["subgroups"]["sex"]["female"]
  assert female["n"] >= 20 and not female["too_few"], female
  assert female["differs"] == "weaker" and female["gaps"]["tests"]["auc"]["ci95"][1] < 0, female
  weaker = [
    (attribute, name)
    for attribute, groups in report["test"]["subgroups"].items()
    for name, group in groups.items()
    if group.get("differs") == "weaker"
  ]
  # Ages 0-17 (all female) and 18-39 (a third female) carry some of the effect; no group
  # without women is weaker.
  assert weaker and set(weaker) <= {("sex", "female"), ("age", "0-17"), ("age", "18-39")}
  last = printed.strip().splitlines()[-1]  # txr-train's last printed line
  assert last.startswith("  Weakest subgroup: sex female, AUC"), printed
  card = (model_dir / "export" / "MODEL_CARD.md").read_text()
  assert "- sex female is **weaker** than the rest of the split (" in card


def test_training_loss_starts_near_log_2_and_falls(learned):
  _, _, log, _ = learned
  losses = [float(x) for x in re.findall(r"(?<!val_)loss: ([0-9.]+)", log)]
  assert len(losses) == EPOCHS, log[-3000:]
  assert 0.5 < losses[0] < 0.75, losses  # a sane start: about log 2, not 3 to 9
  # Taken off within the budget: a run that sits at chance fails here (issue 24). Not by
  # epoch 3: one run here was still at 0.65 then (0.70, 0.70, 0.65, 0.49), the spread from
  # run to run that the README's B9 measures. The female abnormal images (a sixth of the
  # training set) look normal, which holds the loss above what visible lesions alone reach.
  assert losses[3] < 0.6, losses


def test_steps_per_execution_never_exceeds_an_epoch(learned):
  _, _, log, _ = learned
  assert "--steps_per_execution=1000 does not divide an epoch's 30 steps: using 30." in log


def test_features_of_unseen_images_are_like_the_training_images(learned):
  """BatchNorm's moving statistics serve images outside every training batch."""
  import keras

  from txr_model import input_pipeline
  from txr_model import model as model_lib

  data_dir, model_dir, _, _ = learned
  model = keras.models.load_model(model_dir / "model.keras")
  pooled = model_lib.feature_extractor(model)

  def features(split):
    config = input_pipeline.InputConfig("shenzhen_cxr/512", str(data_dir), 75, 32, split=split)
    return pooled.predict(input_pipeline.make_dataset(config).map(lambda x, y: x), verbose=0)

  train, test = features("train"), features("test")
  assert np.isfinite(test).all() and test.std(axis=0).mean() > 1e-3
  ratio = np.linalg.norm(test, axis=1).mean() / np.linalg.norm(train, axis=1).mean()
  assert 0.8 < ratio < 1.25, ratio


@pytest.fixture(scope="module")
def lite_export(learned):
  """txr-export-lite's int8 variant of the learned model (tests/test_lite_predict.py converts
  a float32 network; the benchmark, B8, compares all three on this model's kind)."""
  model_dir = learned[1]
  out = run_ok(
    [sys.executable, "-m", "txr_model.export_lite", f"--model_dir={model_dir}", "--variants=int8"]
    + ["--calibration_images=100"]
  )
  return model_dir / "export", out.stdout


def test_int8_scores_as_the_keras_model_with_thresholds_of_its_own(learned, lite_export):
  import keras

  from txr_lite import lite_model
  from txr_model import evaluation
  from txr_model import input_pipeline
  from txr_model import litert
  from txr_model import metrics

  data_dir, model_dir = learned[:2]
  export_dir, printed = lite_export
  path = str(export_dir / "model_int8.tflite")
  assert "validation AUC" in printed and "(N=64)" in printed
  model = keras.models.load_model(model_dir / "model.keras")
  splits = evaluation.evaluation_configs(
    input_pipeline.run_splits(input_pipeline.InputConfig("shenzhen_cxr/512", str(data_dir), 75, 32))
  )
  test_images, test_labels = litert.read_images(splits["test"])
  val_images, val_labels = litert.read_images(splits["validation"])
  assert len(test_labels) == 114
  keras_scores = model.predict(test_images, verbose=0)[:, 0]
  int8 = lite_model.LiteModel(path)
  int8_scores = int8.predict(test_images)[0]
  keras_auc = metrics.roc_auc(test_labels, keras_scores)
  assert abs(metrics.roc_auc(test_labels, int8_scores) - keras_auc) <= 0.02
  # Outputs in steps of 1/256 and, where the sigmoid is steep, up to 0.1 off (seen in CI):
  # close on average (a wrong input scale or a lost dequantization is off by far more), and
  # never reversing two images that Keras sets well apart.
  assert np.mean(np.abs(int8_scores - keras_scores)) <= 0.05
  apart = keras_scores[:, None] - keras_scores[None, :] > 0.25
  assert (int8_scores[:, None] >= int8_scores[None, :])[apart].all()
  meta = lite_model.load(path).meta  # Its three files checked together.
  val_scores = int8.predict(val_images)[0]  # Its own scores chose its thresholds, not Keras's.
  assert meta.operating_point == "triage"  # The SavedModel's (finish.OPERATING_POINT).
  assert meta.threshold == metrics.triage_threshold(val_labels, val_scores)
  assert meta.thresholds["youden"] == metrics.youden_threshold(val_labels, val_scores)
  assert meta.thresholds_from == {
    "dataset": "shenzhen_cxr/512", "split": "validation", "n": 64,
    "auc": metrics.roc_auc(val_labels, val_scores),
  }  # fmt: skip
  assert meta.image_size == 75 and meta.max_side == 512
  assert meta.calibration == {"split": "train", "n": 100}
  assert (export_dir / "model_int8.tflite").stat().st_size < 25e6


def test_contentless_images_are_refused_or_flagged_never_labelled(learned, tmp_path):
  """Blank, tiny, noise and gradient images: an error or the OOD flag, in both paths.

  On the learned model: the mechanics runs' random features (TINY) say nothing of what
  a film looks like, so their detector cannot be asked to flag these.
  """
  import tensorflow as tf

  from txr_model import predict

  model_dir = learned[1]
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:512, 0:512]
  images = {
    "one_pixel": [[128]],
    "two_pixels": np.full((2, 2), 128),
    "uniform": np.full((512, 512), 128),
    "noise": rng.integers(0, 256, (512, 512)),
    "gradient": (x + y) // 4,
    "ramp": x // 2,
  }
  paths = []
  for name, array in images.items():
    paths.append(tmp_path / f"{name}.png")
    paths[-1].write_bytes(tf.io.encode_png(np.asarray(array, np.uint8)[..., None]).numpy())
  serve = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
  out = serve(image_bytes=tf.constant([p.read_bytes() for p in paths]))
  results = list(predict.predict_files(str(model_dir / "export"), [str(p) for p in paths]))
  for i, name in enumerate(images):
    refused = out["error"][i].numpy() != b""
    assert refused or bool(out["out_of_distribution"][i]), name
    assert ("error" in results[i]) == refused and results[i].get("out_of_distribution", True)
  assert [("error" in r) for r in results] == [True, True, True, False, False, False]
