"""The layout of a run folder (txr-train's --model_dir): its names, for writers and readers alike.

  <model_dir>/
    flags.cfg                 the run's flags: rerun with --flagfile=<model_dir>/flags.cfg
    run_config.json           the RunConfig (run_config.FILE), read back by txr-evaluate
    .txr.lock                 the run's lock (model_dir_lock.FILE)
    best.weights.h5[.json]    the best validation AUC's weights and their record (the weights
                              removed when the run finishes: model.keras holds them)
    backup/<phase>/           each phase's BackupAndRestore, for resuming (removed when the
                              run finishes)
    feature_cache/            --cache_features' bottleneck features (removed likewise)
    model.keras               the evaluated model (the best weights; the optimizer's state
                              only with --keep_optimizer)
    finished.json             written once the run is evaluated and exported: a rerun of the
                              same command then has nothing to do
    metrics.json              its report; scores_<split>.csv, roc.png, reliability.png beside it
    MODEL_CARD.md             the model card, from metrics.json (also in export/)
    logs/                     TensorBoard: training, and the evaluation under logs/evaluation/
    export/                   the SavedModel (runs without --folds only)
    fold_<k>/                 with --folds: round k's run folder (all of the above, no export/)
    cv_metrics.json           with --folds: the cross-validation summary
    worker_<type>_<index>/    a non-chief worker's backups and logs
    evaluation/<dataset>_<split>/   txr-evaluate's outputs, named as above

Only names and paths here: no TensorFlow, so any module may import it.
"""

import hashlib
import os
import re

FLAGFILE = "flags.cfg"
BEST_WEIGHTS = "best.weights.h5"
FINISHED = "finished.json"
BACKUP = "backup"
FEATURE_CACHE = "feature_cache"
MODEL = "model.keras"
METRICS = "metrics.json"
MODEL_CARD = "MODEL_CARD.md"  # Beside every metrics.json, and in the export.
LOGS = "logs"
EVALUATION_LOGS = "evaluation"  # The evaluation's TensorBoard run, inside LOGS.
EXPORT = "export"
CV_METRICS = "cv_metrics.json"
EVALUATION = "evaluation"  # txr-evaluate's outputs, one folder per dataset and split.

_FOLD = "fold_{}"
_FOLD_PATTERN = re.compile(r"^fold_(\d+)$")
_SCORES = "scores_{}.csv"
WORKER_PREFIX = "worker_"
_WORKER = WORKER_PREFIX + "{}_{}"


def fold_name(k: int | str) -> str:
  """The name of cross-validation round k's folder: 'fold_<k>' ('<k>' itself for help texts)."""
  return _FOLD.format(k)


def fold_dir(model_dir: str, k: int | str) -> str:
  """Round k's run folder inside a cross-validation run's `model_dir`."""
  return os.path.join(model_dir, fold_name(k))


def fold_index(path: str) -> int | None:
  """The round of a fold_<k> folder (a trailing separator allowed); None for another folder."""
  match = _FOLD_PATTERN.match(os.path.basename(os.path.normpath(path)))
  return int(match[1]) if match else None


def scores_path(directory: str, split: str) -> str:
  """The CSV of each case's score on `split`, in a run (or evaluation) folder."""
  return os.path.join(directory, _SCORES.format(split))


def worker_dir(model_dir: str, task_type: str, task_index: int) -> str:
  """Where a non-chief worker keeps its own backups and logs, apart from the chief's."""
  return os.path.join(model_dir, _WORKER.format(task_type, task_index))


def evaluation_dir(model_dir: str, dataset: str, split: str, data_dir: str | None = None) -> str:
  """Where txr-evaluate writes: a folder of its own, never over the training run's files.

  Args:
    model_dir: the evaluated run (or fold) folder.
    dataset: the evaluated TFDS name/config.
    split: the evaluated split, or 'cross_validation'.
    data_dir: where the dataset was read, when not the training run's own: one
      dataset name in two data dirs (two sites' `local_cxr`, say) is two sets.

  Returns:
    `<model_dir>/evaluation/<dataset with / as _>_<split>`, with `_<8 hex digits
    of data_dir's hash>` after it when `data_dir` is given.
  """
  name = f"{dataset.replace('/', '_')}_{split}"
  if data_dir:
    name += "_" + hashlib.sha1(data_dir.rstrip("/").encode()).hexdigest()[:8]
  return os.path.join(model_dir, EVALUATION, name)
