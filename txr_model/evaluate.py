r"""Evaluates a trained model on a split of a built dataset (txr-evaluate).

  txr-evaluate --model_dir=/tmp/txr_demo/model [--split=test]
  txr-evaluate --model_dir=/tmp/txr_demo/model --dataset=montgomery_cxr/512 --split=all

Thresholds are chosen on the TRAINING dataset's validation split (for a
cross-validation fold, its validation fold) and applied unchanged to the
evaluated split, whatever dataset it comes from: a cross-site evaluation
measures the operating points a deployment would use.

stdout holds the evaluated split's summary as JSON; stderr ends with a
summary for people.

On a cross-validation run (a --model_dir with fold_<k>/ and cv_metrics.json),
each fold's model is evaluated on its own held-out fold, and the pooled
out-of-fold AUC (every image scored once, by the model that did not see it)
is reported beside the per-fold mean +/- sd. To evaluate one fold's model on
another dataset, point --model_dir at its fold_<k>/ folder.

Every summary has the evaluated images' subgroups (sex, --age_bands, site,
and the dataset's other class features), at the same thresholds, and names
the groups weaker than the rest (metrics.subgroups).

Outputs never replace the training run's: they go to
<model_dir>/evaluation/<dataset>_<split>/ (metrics.json, MODEL_CARD.md,
roc.png, reliability.png, scores_<split>.csv, logs/), or
.../<dataset>_cross_validation/ for a cross-validation run (cv_metrics.json
and fold_<k>/).
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

import txr_data  # noqa: F401  (registers the builders)
from txr_model import cli
from txr_model import dataset_attributes
from txr_model import evaluation
from txr_model import input_pipeline
from txr_model import metrics
from txr_model import model_dir_lock
from txr_model import report_files
from txr_model import report_text
from txr_model import run_config
from txr_model import run_dir

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A txr-train output directory.")
_DATASET = flags.DEFINE_string(
  "dataset", None, "TFDS name/config to evaluate; default: the training one."
)
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "TFDS data dir of --dataset; default: the training one."
)
_SPLIT = flags.DEFINE_string(
  "split", "test", "Split to evaluate ('all' for every image); thresholds come from validation."
)
_SEED = flags.DEFINE_integer(
  "seed", None, "Seed of the bootstrap confidence intervals; default: the training run's."
)
_AGE_BANDS = flags.DEFINE_string(
  "age_bands",
  None,
  "Age bands of the subgroups, in years: contiguous from 0, the last open-ended; default: the"
  f" training run's (without a run, {metrics.AGE_BANDS}).",
)


def _check_split(dataset, data_dir, split):
  """A one-line usage error for a --split that a dataset does not have."""
  for name in input_pipeline.dataset_names(dataset):
    try:
      cli.dataset_builder(name, data_dir).info.splits[split]
    except (KeyError, ValueError) as e:  # Unknown split 'x'. Should be one of [...].
      raise app.UsageError(
        f"--split={split}: {name}: {str(e).splitlines()[0]} ('all' reads every image)"
      ) from None


def main(argv):
  """Evaluates --model_dir's model (or each fold's) on --split and prints the report."""
  del argv
  model_dir = _MODEL_DIR.value
  cli.check_folder_flag("model_dir", model_dir)
  trained, fold = run_config.training_run(model_dir)
  dataset = _DATASET.value or (trained and trained.dataset)
  data_dir = _DATA_DIR.value or (trained and trained.data_dir)
  if not dataset or not data_dir:
    raise app.UsageError(f"Give --dataset and --data_dir (no {run_config.FILE} in --model_dir).")
  try:
    input_pipeline.dataset_names(dataset)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  split = _SPLIT.value
  same_data = trained is None or (dataset == trained.dataset and data_dir == trained.data_dir)
  folds = trained.folds if trained else 0
  cross_validation = bool(folds) and fold is None
  if cross_validation and not same_data:
    raise app.UsageError(
      f"{model_dir} is a {folds}-fold cross-validation run: evaluate one fold's model on"
      f" {dataset} with --model_dir={run_dir.fold_dir(model_dir, '<k>')}."
    )
  if cross_validation and _SPLIT.present and split != "test":
    raise app.UsageError(
      f"{model_dir} is a {folds}-fold cross-validation run: each fold's model is evaluated on"
      " its own held-out fold, so --split does not apply."
    )
  if folds and same_data and split not in input_pipeline.SPLITS:
    raise app.UsageError(
      f"--split={split}: a cross-validation fold's splits are {', '.join(input_pipeline.SPLITS)}"
      " (its fold groups)."
    )
  model_dirs = [run_dir.fold_dir(model_dir, k) for k in range(folds)]
  for path in model_dirs if cross_validation else [model_dir]:
    if not tf.io.gfile.exists(os.path.join(path, run_dir.MODEL)):
      raise app.UsageError(
        f"No {os.path.join(path, run_dir.MODEL)}: point --model_dir at a txr-train output"
        " directory."
      )
  chosen = run_config.evaluation_settings(trained, _SEED.value, _AGE_BANDS.value)
  try:
    metrics.parse_age_bands(chosen.age_bands)
  except ValueError as e:
    raise app.UsageError(f"--age_bands={chosen.age_bands}: {e}") from None
  for note in chosen.overridden:  # Visibly: these figures will not be the run's own.
    _tell(f"{note} overrides the training run's setting.")
  cli.check_built(dataset, data_dir)
  if not same_data:
    cli.check_built(trained.dataset, trained.data_dir)
  if not (folds and same_data):  # A fold's splits are its fold groups, checked above.
    _check_split(dataset, data_dir, split)

  # txr-train may be rewriting model.keras: one command at a time per run folder.
  lock_dir = os.path.dirname(os.path.normpath(model_dir)) if fold is not None else model_dir
  try:
    with model_dir_lock.hold(lock_dir):
      _evaluate_and_tell(trained, fold, model_dir, model_dirs, cross_validation, dataset,
                         data_dir, split, chosen)  # fmt: skip
  except model_dir_lock.ModelDirInUseError as e:
    raise app.UsageError(str(e)) from None


def _evaluate_and_tell(
  trained, fold, model_dir, model_dirs, cross_validation, dataset, data_dir, split, chosen
):
  """Evaluates (each fold's model, or the one) and prints the report and where it went."""
  if cross_validation:
    out_dir = run_dir.evaluation_dir(model_dir, dataset, "cross_validation")
    summary = _evaluate_folds(trained, model_dirs, out_dir, chosen.seed, chosen.age_bands)
    report_files.write_json(os.path.join(out_dir, run_dir.CV_METRICS), summary)
    print(json.dumps(report_files.json_safe(summary), indent=2, sort_keys=True))
    _tell(f"{report_text.describe_cross_validation(summary)}\n  Outputs in {out_dir}")
    return
  elsewhere = data_dir if trained is None or data_dir != trained.data_dir else None
  out_dir = run_dir.evaluation_dir(model_dir, dataset, split, elsewhere)
  report, key = _evaluate(trained, fold, model_dir, dataset, data_dir, split, out_dir, chosen)
  printed = {key: report[key], "protocol": report["protocol"]}
  print(json.dumps(report_files.json_safe(printed), indent=2, sort_keys=True))
  _tell(f"{report_text.describe_report(report, key)}\n  Outputs in {out_dir}")


def _tell(text):
  """The summary for people, on stderr: stdout holds JSON alone, for programs."""
  print(f"txr-evaluate: {text}", file=sys.stderr)


def _evaluate(trained, fold, model_dir, dataset, data_dir, split, out_dir, chosen):
  """Evaluates one model; returns its report and the evaluated split's key in it."""
  model = keras.models.load_model(os.path.join(model_dir, run_dir.MODEL))
  size = model.input_shape[1]
  evaluated = input_pipeline.InputConfig(
    dataset, data_dir, size, evaluation.BATCH_SIZE, split=split
  )
  if trained is None:  # No run_config.json: thresholds from the evaluated dataset's validation.
    thresholds = dataclasses.replace(evaluated, split="validation")
  else:
    source = input_pipeline.InputConfig(
      trained.dataset, trained.data_dir, size, evaluation.BATCH_SIZE
    )
    run_splits = input_pipeline.run_splits(source, trained.folds, fold or 0)
    thresholds = run_splits["validation"]
    if dataset == trained.dataset and data_dir == trained.data_dir and split in run_splits:
      evaluated = run_splits[split]  # A fold's split: its fold groups.
    trained_on = input_pipeline.training_images_in(
      trained.dataset, trained.folds, run_splits, evaluated
    )
    if trained_on:
      logging.warning(
        "--dataset=%s --split=%s includes images the model trained on (from %s): its figures"
        " overstate how well it does on new images.",
        dataset, split, ", ".join(trained_on),
      )  # fmt: skip
  # Another dataset's validation split must not take the key of the thresholds' one.
  key = "evaluated" if split == "validation" and evaluated != thresholds else split
  configs = evaluation.evaluation_configs({"validation": thresholds, key: evaluated})
  info = _run_info(model_dir, trained, None if trained is None else run_splits, chosen.age_bands)
  scored = evaluation.evaluate_split(model, configs, key, chosen.seed, info, chosen.age_bands)
  energy = evaluation.lung_energy(os.path.join(model_dir, run_dir.EXPORT), evaluated)
  if energy is not None:  # A dataset with lung masks: is the model looking at the lungs?
    scored.report[key]["grad_cam_lung_energy"] = energy
  report_files.write_report(scored, key, os.path.join(out_dir, run_dir.LOGS), out_dir)
  return scored.report, key


def _evaluate_folds(trained, model_dirs, out_dir, seed, age_bands):
  """Each fold's model on its held-out fold; the cross-validation summary."""
  reports, fold_outs = {}, []
  for k, fold_dir in enumerate(model_dirs):
    model = keras.models.load_model(os.path.join(fold_dir, run_dir.MODEL))
    source = input_pipeline.InputConfig(
      trained.dataset, trained.data_dir, model.input_shape[1], evaluation.BATCH_SIZE
    )
    splits = input_pipeline.run_splits(source, trained.folds, k)
    configs = evaluation.evaluation_configs({n: splits[n] for n in ("validation", "test")})
    fold_outs.append(run_dir.fold_dir(out_dir, k))
    info = _run_info(fold_dir, trained, splits, age_bands)
    scored = evaluation.evaluate_split(model, configs, "test", seed, info, age_bands)
    write = (scored, "test", os.path.join(fold_outs[-1], run_dir.LOGS), fold_outs[-1])
    report_files.write_report(*write)
    reports[run_dir.fold_name(k)] = scored.report["test"]
  return evaluation.cross_validation_report(fold_outs, reports, trained.data_dir, seed, age_bands)


def _run_info(model_dir, trained=None, splits=None, age_bands=None):
  """Facts about the training run (which weights were saved), from its metrics.json.

  Its training data's counts by age are recounted in `age_bands` where these are
  not the run's, so that the card's two tables (training data, subgroups) use
  one set of bands.

  Args:
    model_dir: the run's (or fold's) folder.
    trained: the run's settings, or None.
    splits: the run's (or fold's) splits, their InputConfig by name; with `trained`.
    age_bands: the evaluation's age bands.
  """
  path = os.path.join(model_dir, run_dir.METRICS)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    info = json.load(f).get("run")
  if info and info.get("training_data") and trained and age_bands != trained.age_bands:
    counts = dataset_attributes.split_counts(evaluation.evaluation_configs(splits), age_bands)
    info = {**info, "training_data": counts}
  return info


def run():
  """Console-script entry point (txr-evaluate)."""
  cli.run(main, ("model_dir",))


if __name__ == "__main__":
  run()
