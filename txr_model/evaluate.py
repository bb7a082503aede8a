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

from txr_model import cli
from txr_model import evaluation

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A txr-train output directory.")
_DATASET = flags.DEFINE_string("dataset", None, "TFDS name/config; default: the training one.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir; default: the training one.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate; thresholds come from validation.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the bootstrap confidence interval.")


def main(argv):
  """Evaluates --model_dir's model on --split and prints the report."""
  del argv
  import keras
  import tensorflow as tf

  import txr_data  # noqa: F401  (registers the builders)
  from txr_model import input_pipeline
  from txr_model import run_config

  model_dir = _MODEL_DIR.value
  cli.check_folder_flag("model_dir", model_dir)
  model_path = os.path.join(model_dir, "model.keras")
  if not tf.io.gfile.exists(model_path):
    raise app.UsageError(f"No {model_path}: point --model_dir at a txr-train output directory.")
  trained = run_config.RunConfig.load(model_dir)
  dataset = _DATASET.value or (trained and trained.dataset)
  data_dir = _DATA_DIR.value or (trained and trained.data_dir)
  if not dataset or not data_dir:
    raise app.UsageError(f"Give --dataset and --data_dir (no {run_config.FILE} in --model_dir).")
  cli.dataset_builder(dataset, data_dir)  # A one-line error for an unknown name.
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
  cli.run(main, ("model_dir",))


if __name__ == "__main__":
  run()
