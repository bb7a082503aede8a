r"""Evaluates a trained model on a split of a built dataset (txr-evaluate).

  txr-evaluate --model_dir=/tmp/txr_demo/model [--split=test]

Thresholds are chosen on the validation split, never on the evaluated one.
Writes metrics.json, roc.png and TensorBoard summaries into --model_dir.
"""

import dataclasses
import json
import os

from absl import app
from absl import flags

from txr_model import evaluation

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A txr-train output directory.")
_DATASET = flags.DEFINE_string("dataset", None, "TFDS name/config; default: the training one.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir; default: the training one.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate; thresholds come from validation.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the bootstrap confidence interval.")


def _training_flags(model_dir: str) -> dict:
  import tensorflow as tf

  path = os.path.join(model_dir, "flags.cfg")
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    pairs = (line.strip()[2:].split("=", 1) for line in f if line.startswith("--"))
    return {k: v for k, v in (p for p in pairs if len(p) == 2)}


def main(argv):
  del argv
  import keras
  import tensorflow as tf

  import txr_data  # noqa: F401  (registers the builders)
  from txr_model import input_pipeline

  model_dir = _MODEL_DIR.value
  model_path = os.path.join(model_dir, "model.keras")
  if not tf.io.gfile.exists(model_path):
    raise app.UsageError(f"No {model_path}: point --model_dir at a txr-train output directory.")
  trained = _training_flags(model_dir)
  dataset = _DATASET.value or trained.get("dataset")
  data_dir = _DATA_DIR.value or trained.get("data_dir")
  if not dataset or not data_dir:
    raise app.UsageError("Give --dataset and --data_dir (no flags.cfg in --model_dir).")
  model = keras.models.load_model(model_path)
  # Facts about the training run (which weights were saved) stay in the report.
  run_info = None
  if tf.io.gfile.exists(os.path.join(model_dir, "metrics.json")):
    with tf.io.gfile.GFile(os.path.join(model_dir, "metrics.json")) as f:
      run_info = json.load(f).get("run")
  base = input_pipeline.InputConfig(dataset, data_dir, model.input_shape[1], 32)
  splits = {name: dataclasses.replace(base, split=name) for name in ("validation", _SPLIT.value)}
  report, _, _ = evaluation.report_split(
    model,
    evaluation.evaluation_configs(splits),
    _SPLIT.value,
    _SEED.value,
    os.path.join(model_dir, "logs"),
    model_dir,
    run_info,
  )
  print(json.dumps(evaluation.json_safe(report[_SPLIT.value]), indent=2, sort_keys=True))


def run():
  """Console-script entry point (txr-evaluate)."""
  if "BUILD_WORKING_DIRECTORY" in os.environ:  # `bazel run` starts in the runfiles tree.
    os.chdir(os.environ["BUILD_WORKING_DIRECTORY"])
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
