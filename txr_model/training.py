"""A txr-train run: checks its settings, builds its datasets, trains, evaluates and exports.

txr-train (train.py) parses and checks its flags without TensorFlow, then
hands the run's settings to `run` here.
"""

import json
import os

from absl import app
from absl import logging
import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import txr_data  # noqa: F401  (registers the builders)
from txr_lite import contract
from txr_model import cli
from txr_model import evaluation
from txr_model import finish
from txr_model import fitting
from txr_model import input_pipeline
from txr_model import keras_compat
from txr_model import model_dir_lock
from txr_model import report_files
from txr_model import report_text
from txr_model import run_config
from txr_model import run_dir
from txr_model import strategy as strategy_lib


def run(config: run_config.RunConfig, overwrite: bool, keep_optimizer: bool) -> None:
  """Builds the dataset if needed, trains (or cross-validates), evaluates and exports.

  The caller has checked the run folders first (`run_config.check_model_dirs`:
  txr-train does, before TensorFlow loads).

  Args:
    config: the run's settings (txr-train's flags).
    overwrite: --overwrite: remove an earlier run's files from --model_dir first.
    keep_optimizer: --keep_optimizer: keep the optimizer's state in model.keras.

  Raises:
    app.UsageError: a setting that cannot work here, before anything is created.
  """
  # Every usage error before anything is created.
  cli.check_folder_flag("model_dir", config.model_dir)
  try:
    names = input_pipeline.dataset_names(config.dataset)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  builders = [cli.dataset_builder(name, config.data_dir) for name in names]
  # Logical devices must be set before any TF op runs, and the strategy made
  # before any dataset (TPUs need both).
  strategy_lib.configure_cpu_devices(config.num_cpu_devices)
  try:
    strategy = strategy_lib.get_strategy(config.strategy, config.tpu, config.num_gpus)
  except ValueError as e:  # Asked-for hardware is absent: nothing is created yet.
    raise app.UsageError(str(e)) from None
  keras_compat.patch_multi_worker_fit()
  replicas = strategy.num_replicas_in_sync
  if config.global_batch_size % replicas:
    raise app.UsageError(
      f"--global_batch_size={config.global_batch_size} is not a multiple of the"
      f" {replicas} replicas."
    )
  policy = strategy_lib.compute_dtype_policy(config.mixed_precision, strategy)
  keras.mixed_precision.set_global_policy(policy)
  chief = strategy_lib.is_chief()
  model_dir = config.model_dir
  # Non-chief workers keep their own backups and logs apart from the chief's.
  work_dir = model_dir if chief else run_dir.worker_dir(model_dir, *strategy_lib.task())
  tf.io.gfile.makedirs(work_dir)
  logging.info(
    "Strategy %s: %d replica(s), global batch %d, dtype policy %s, chief=%s",
    type(strategy).__name__,
    replicas,
    config.global_batch_size,
    policy,
    chief,
  )
  if not chief:
    _run(config, strategy, builders, chief, work_dir, overwrite, keep_optimizer)
    return
  try:
    with model_dir_lock.hold(model_dir):
      _run(config, strategy, builders, chief, work_dir, overwrite, keep_optimizer)
  except model_dir_lock.ModelDirInUseError as e:
    raise app.UsageError(str(e)) from None


def _start_afresh(work_dir):
  """Removes what an earlier run left in this process's `work_dir`.

  Keeps the lock this run holds and the workers' folders, which each worker
  clears itself (a worker may already be writing to its own).
  """
  for name in tf.io.gfile.listdir(work_dir):
    name = name.rstrip("/")
    path = os.path.join(work_dir, name)
    if name == model_dir_lock.FILE or name.startswith(run_dir.WORKER_PREFIX):
      continue
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)
  logging.info("--overwrite: removed the earlier run's files from %s", work_dir)


def _run(config, strategy, builders, chief, work_dir, overwrite, keep_optimizer):
  """Builds the datasets if needed, then trains once or per cross-validation fold."""
  model_dir = config.model_dir
  for builder in builders:
    _prepare(builder, config, chief)
  # Seeded only after the build: TFDS names its temporary build folder with
  # Python's `random`, so two runs seeded alike would build into the same one.
  keras.utils.set_random_seed(config.seed)
  if overwrite:
    _start_afresh(work_dir)
  if chief:
    config.save(model_dir)  # run_config.json for txr-evaluate, flags.cfg for reruns
  base = input_pipeline.InputConfig(
    dataset=config.dataset,
    data_dir=config.data_dir,
    image_size=config.image_size,
    global_batch_size=config.global_batch_size,
    seed=config.seed,
  )
  if not config.folds:
    splits = input_pipeline.run_splits(base)
    report = _train(config, strategy, chief, work_dir, model_dir, splits, keep_optimizer)
    if report:
      print(report_text.describe_run(report, model_dir))
    return
  reports = {}
  for k in range(config.folds):
    splits = input_pipeline.run_splits(base, config.folds, k)
    fold_work_dir, fold_dir = run_dir.fold_dir(work_dir, k), run_dir.fold_dir(model_dir, k)
    report = _train(config, strategy, chief, fold_work_dir, fold_dir, splits, keep_optimizer)
    if report:
      reports[run_dir.fold_name(k)] = report["test"]
  if chief:
    summary = evaluation.cross_validation_report(
      [run_dir.fold_dir(model_dir, k) for k in range(config.folds)],
      reports,
      config.data_dir,
      config.seed,
      config.age_bands,
    )
    report_files.write_json(os.path.join(model_dir, run_dir.CV_METRICS), summary)
    print(f"txr-train: {report_text.describe_cross_validation(summary)}\n  Outputs in {model_dir}")


def _prepare(builder, config, chief) -> None:
  """Builds `builder`'s dataset into --data_dir unless it is built.

  Two runs that build one dataset at once both write it; the second to finish
  fails to rename its copy over the first's, which is just as good, so it goes on.
  """
  if builder.is_prepared():
    return
  if not chief:
    raise app.UsageError(
      f"{builder.info.full_name} is not built in {config.data_dir}: build it once (tfds build"
      " or the chief) before starting the other workers."
    )
  logging.info("Building %s into %s", builder.info.full_name, config.data_dir)
  try:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=config.manual_dir)
    )
  except Exception as e:  # The rename's error differs by file system (os, epath, gfile).
    if not builder.is_prepared():
      raise
    logging.warning("Another run built %s meanwhile (%s); using it.", builder.info.full_name, e)


def _train(config, strategy, chief, work_dir, model_dir, splits, keep_optimizer):
  """Trains on splits['train']; on the chief, saves the best weights, evaluates and exports.

  A run (or fold) that finished before is not trained, evaluated or exported
  again: its outputs are in place (and what other commands added to export/
  stays), unless its export's metadata is of another format (an older txr's):
  then its model.keras is evaluated and exported again, untrained. Returns the
  evaluation report on the chief, None on other workers.
  """
  finished = os.path.join(model_dir, run_dir.FINISHED)
  if tf.io.gfile.exists(finished):
    if not chief:
      return None
    _remove_resume_state(work_dir)  # In case a kill came between the record and the removal.
    older = None if config.folds else _older_export_format(model_dir)
    if older is None:
      logging.info("%s: finished before (%s); nothing to do.", model_dir, run_dir.FINISHED)
      with tf.io.gfile.GFile(os.path.join(model_dir, run_dir.METRICS)) as f:
        return json.load(f)
    logging.warning(
      "%s: its export has metadata format %s, which this txr's predictors refuse: evaluating"
      " and exporting its %s again (no training).", model_dir, older, run_dir.MODEL
    )  # fmt: skip
    with tf.io.gfile.GFile(finished) as f:
      return _finish(config, model_dir, splits, json.load(f)["weights"])
  model, checkpoint = fitting.train_model(config, strategy, work_dir, splits)
  if not chief:
    return None  # Only the chief writes the final outputs.
  weights = fitting.restore_best(model, checkpoint)
  logging.info("Saving the weights of the %s", weights)
  path = os.path.join(model_dir, run_dir.MODEL)
  fitting.save_model(model, path, keep_optimizer=keep_optimizer)
  logging.info("Wrote %s", path)
  report = _finish(config, model_dir, splits, weights)
  with tf.io.gfile.GFile(finished, "w") as f:
    json.dump({"weights": weights}, f)
  _remove_resume_state(work_dir)
  return report


def _finish(config, model_dir, splits, weights):
  """Evaluates the saved model.keras, fits the OOD detector and exports; returns the report.

  On one device (no collectives, whatever the strategy). A fold's model serves
  its estimate; the deployable model is a run without --folds.
  """
  return finish.finish_run(
    model_dir,
    splits,
    config.seed,
    {"weights": weights, **_recipe(config)},
    export_model=not config.folds,
    age_bands=config.age_bands,
  )


def _older_export_format(model_dir):
  """The metadata format of a finished run's export if it is not this txr's (None: current).

  A run exported by an older txr is refused by this txr's predictors ("export
  again"); rerunning its txr-train command exports it again.
  """
  path = os.path.join(model_dir, run_dir.EXPORT, contract.SAVED_MODEL_METADATA)
  if not tf.io.gfile.exists(path):
    return "none (no export)"
  with tf.io.gfile.GFile(path, "rb") as f:
    try:
      version = json.loads(f.read()).get("format")
    except (ValueError, AttributeError):
      version = "unreadable"
  return None if version == contract.FORMAT else version


def _remove_resume_state(work_dir):
  """Removes what only resuming needed: the phases' backups, the best weights and the cache.

  model.keras holds the best weights; their record (best.weights.h5.json) stays.
  """
  for name in (run_dir.BACKUP, run_dir.FEATURE_CACHE, run_dir.BEST_WEIGHTS):
    path = os.path.join(work_dir, name)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def _recipe(config) -> dict:
  """What the model card says of how the model was trained, from the run's config."""
  fields = ("dataset", "backbone", "mode", "image_size", "epochs", "seed", "folds")
  recipe = {name: getattr(config, name) for name in fields}
  recipe["weights_init"] = config.weights
  if config.init_from:
    parent = run_config.RunConfig.load(config.init_from)
    recipe["weights_init"] = f"the model of the run at {config.init_from}"
    recipe["init_from"] = {"run": config.init_from, "dataset": parent.dataset,
                           "seed": parent.seed, "mode": parent.mode}  # fmt: skip
  if config.mode == "two_phase":
    recipe["fine_tune_epochs"] = config.fine_tune_epochs
  return recipe
