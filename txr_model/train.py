r"""Trains InceptionV3 on a TFDS chest X-ray dataset under a tf.distribute strategy.

  txr-train --flagfile=configs/demo.cfg

--mode=two_phase (pretrained weights): phase 1 trains the head on a frozen
base; phase 2 unfreezes the top inception blocks at a lower learning rate.
--mode=end_to_end (from scratch, --weights=none): one phase trains every
layer. Each phase warms its learning rate up for an epoch, then follows a
cosine decay. Evaluation and export use the weights of the epoch with the best
validation AUC. A killed run restarted with the same command continues where
it stopped (BackupAndRestore). Outputs go to --model_dir.
"""

import dataclasses
import os

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import txr_data  # noqa: F401  (registers the builders)
from txr_model import cli
from txr_model import evaluation
from txr_model import feature_cache
from txr_model import finish
from txr_model import fitting
from txr_model import input_pipeline
from txr_model import keras_compat
from txr_model import model as model_lib
from txr_model import model_dir_lock
from txr_model import run_config
from txr_model import strategy as strategy_lib

_DATASET = flags.DEFINE_string(
  "dataset",
  "shenzhen_cxr/512",
  "TFDS name/config to train on; join several with + (shenzhen_cxr/512+montgomery_cxr/512).",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (local or gs://).")
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "Source data for building the dataset if it is not built yet."
)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where outputs go (local or gs://).")
_STRATEGY = flags.DEFINE_enum(
  "strategy", "default", strategy_lib.STRATEGIES, "tf.distribute strategy."
)
_TPU = flags.DEFINE_string("tpu", "", "TPU name or grpc:// address; empty for a TPU VM.")
_NUM_GPUS = flags.DEFINE_integer("num_gpus", -1, "GPUs to use; -1 for all visible.", lower_bound=-1)
_NUM_CPU_DEVICES = flags.DEFINE_integer(
  "num_cpu_devices", 1, "Split the CPU into this many logical devices.", lower_bound=1
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 299, "Model input size in px.", lower_bound=75)
_GLOBAL_BATCH_SIZE = flags.DEFINE_integer(
  "global_batch_size", 32, "Batch size over all replicas.", lower_bound=1
)
_WEIGHTS = flags.DEFINE_string(
  "weights", "imagenet", "Base weights: 'imagenet', a weights file path, or 'none'."
)
_MODE = flags.DEFINE_enum(
  "mode",
  "two_phase",
  model_lib.MODES,
  "two_phase: head on a frozen pretrained base, then the top blocks (needs --weights)."
  " end_to_end: every layer from the start, BatchNorm training (from scratch: --weights=none).",
)
_DROPOUT = flags.DEFINE_float("dropout", 0.2, "Dropout before the classifier.", 0.0, 0.99)
_EPOCHS = flags.DEFINE_integer(
  "epochs", 5, "Epochs of phase 1 (head only), or of the one end_to_end phase.", lower_bound=1
)
_FINE_TUNE_EPOCHS = flags.DEFINE_integer(
  "fine_tune_epochs",
  5,
  "Epochs of phase 2 (top blocks unfrozen); 0 skips it. two_phase only.",
  lower_bound=0,
)
_FINE_TUNE_BLOCKS = flags.DEFINE_integer(
  "fine_tune_blocks", 2, "Top inception blocks to unfreeze in phase 2.", 1, 11
)
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate", 1e-3, "Peak learning rate of phase 1 (or of end_to_end).", 0.0
)
_FINE_TUNE_LEARNING_RATE = flags.DEFINE_float(
  "fine_tune_learning_rate", 1e-5, "Peak learning rate of phase 2.", 0.0
)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 1e-3, "AdamW's decoupled weight decay.", 0.0)
_WARMUP_EPOCHS = flags.DEFINE_float(
  "warmup_epochs", 1.0, "Linear learning-rate warm-up of each phase, in epochs.", 0.0
)
_PATIENCE = flags.DEFINE_integer(
  "early_stopping_patience",
  0,
  "Stop a phase after this many epochs without a better validation AUC; 0: never.",
  lower_bound=0,
)
_MIXED_PRECISION = flags.DEFINE_enum(
  "mixed_precision",
  "auto",
  ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
  "Keras dtype policy; auto: bfloat16 on TPU, float16 on GPU, float32 on CPU.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_FOLDS = flags.DEFINE_integer(
  "folds",
  0,
  "K >= 3: K-fold cross-validation; all splits' cases are dealt into K balanced groups,"
  " stratified by site and label (fold_<k>/ per fold).",
  lower_bound=0,
  upper_bound=10,
)
_CACHE_FEATURES = flags.DEFINE_bool(
  "cache_features",
  False,
  "Phase 1 trains the head on pooled base features computed once (retrain.py's bottlenecks).",
)
_CACHE_VIEWS = flags.DEFINE_integer(
  "cache_views", 4, "Views per training image in the cache (view 0 unaugmented).", lower_bound=1
)
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
  "steps_per_execution", 1, "Training steps per tf.function call (raise on TPU).", lower_bound=1
)

_FLAGS = flags.FLAGS
flags.mark_flags_as_required(["data_dir", "model_dir"])
flags.register_validator(
  "folds", lambda k: k == 0 or k >= 3, "--folds needs 3 or more (train, validation, test)."
)


@flags.multi_flags_validator(
  ["mode", "weights"],
  "--mode=two_phase needs pretrained --weights (imagenet or a file): a frozen random base gives"
  " the head nothing to learn. From scratch, use --mode=end_to_end --weights=none.",
)
def _two_phase_needs_pretrained_weights(values):
  return not (values["mode"] == "two_phase" and values["weights"].lower() == "none")


@flags.multi_flags_validator(
  ["mode", "cache_features"],
  "--cache_features needs --mode=two_phase: it caches the features of a frozen base.",
)
def _cache_needs_a_frozen_base(values):
  return not (values["cache_features"] and values["mode"] == "end_to_end")


@flags.multi_flags_validator(["strategy", "mixed_precision"], "float16 is not for TPUs.")
def _no_float16_on_tpu(values):
  return not (values["strategy"] == "tpu" and values["mixed_precision"] == "mixed_float16")


@flags.multi_flags_validator(
  ["strategy", "tpu", "data_dir", "model_dir"],
  "A Cloud TPU node reads and writes only gs://: use gs:// --data_dir and --model_dir.",
)
def _tpu_node_needs_gcs(values):
  if values["strategy"] != "tpu" or values["tpu"] in ("", "local"):
    return True
  return all(str(values[k]).startswith("gs://") for k in ("data_dir", "model_dir"))


def _flagfile_text() -> str:
  module = flags.FLAGS.find_module_defining_flag("model_dir")
  return "".join(f.serialize() + "\n" for f in flags.FLAGS.get_flags_for_module(module))


def main(argv):
  """Builds the dataset if needed, trains (or cross-validates), evaluates and exports."""
  del argv
  config = run_config.RunConfig.from_flags(_FLAGS)
  if config.mode == "end_to_end" and _FLAGS["fine_tune_epochs"].present:
    logging.warning("--mode=end_to_end has one phase: --fine_tune_* flags are not used.")
  # Every usage error before anything is created; neither check runs a TF op.
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
  work_dir = (
    model_dir if chief else os.path.join(model_dir, "worker_{}_{}".format(*strategy_lib.task()))
  )
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
    _run(config, strategy, builders, chief, work_dir)
    return
  try:
    with model_dir_lock.hold(model_dir):
      _run(config, strategy, builders, chief, work_dir)
  except model_dir_lock.ModelDirInUseError as e:
    raise app.UsageError(str(e)) from None


def _run(config, strategy, builders, chief, work_dir):
  """Builds the datasets if needed, then trains once or per cross-validation fold."""
  model_dir = config.model_dir
  for builder in builders:
    _prepare(builder, config, chief)
  # Seeded only after the build: TFDS names its temporary build folder with
  # Python's `random`, so two runs seeded alike would build into the same one.
  keras.utils.set_random_seed(config.seed)
  if chief:
    with tf.io.gfile.GFile(os.path.join(model_dir, "flags.cfg"), "w") as f:
      f.write(_flagfile_text())  # for reruns: --flagfile=<model_dir>/flags.cfg
    config.save(model_dir)  # for txr-evaluate
  base = input_pipeline.InputConfig(
    dataset=config.dataset,
    data_dir=config.data_dir,
    image_size=config.image_size,
    global_batch_size=config.global_batch_size,
    seed=config.seed,
  )
  if not config.folds:
    splits = input_pipeline.run_splits(base)
    report = _train(config, strategy, chief, work_dir, model_dir, splits)
    if report:
      print(describe(report, model_dir))
    return
  reports = {}
  for k in range(config.folds):
    splits = input_pipeline.run_splits(base, config.folds, k)
    fold_dir = os.path.join(model_dir, f"fold_{k}")
    fold_work_dir = os.path.join(work_dir, f"fold_{k}")
    report = _train(config, strategy, chief, fold_work_dir, fold_dir, splits)
    if report:
      reports[f"fold_{k}"] = report["test"]
  if chief:
    # Every image once, scored by the fold model that did not train on it.
    scored = [
      evaluation.read_scores(os.path.join(model_dir, name, "scores_test.csv")) for name in reports
    ]
    summary = evaluation.cross_validation_report(
      reports, *(np.concatenate(column) for column in zip(*scored, strict=True)), seed=config.seed
    )
    evaluation.write_json(os.path.join(model_dir, "cv_metrics.json"), summary)
    print(f"txr-train: {evaluation.describe_cross_validation(summary)}\n  Outputs in {model_dir}")


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


def describe(report: dict, model_dir: str) -> str:
  """The closing lines of a run: the test figures with their N and CI, and what they mean.

  Args:
    report: the report of `finish.finish_run`.
    model_dir: where the outputs went.

  Returns:
    Lines for the user.
  """
  test, triage = report["test"], report["test"]["operating_points"]["triage"]
  low, high = test["auc_ci95"]
  calibration = test["calibration"]
  return "\n".join(
    [
      f"txr-train: done. Outputs in {model_dir}",
      f"  Test AUC {test['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) on {test['n']} held-out"
      f" images ({test['n_positive']} abnormal); weights: {report['run']['weights']}.",
      *evaluation.describe_by_group(test),
      f"  At the triage threshold chosen on validation: sensitivity {triage['sensitivity']:.3f},"
      f" specificity {triage['specificity']:.3f}.",
      f"  Calibration: ECE {calibration['ece']:.3f} ({calibration['num_bins']} bins, N="
      f"{calibration['n']}; reliability.png).",
      "  AUC is the chance that an abnormal image scores above a normal one. It holds for"
      " images like this dataset's test split (same source, scanner and population), not for"
      " others; on the demo's synthetic sample it shows that training works, not clinical skill.",
    ]
  )


def _train(config, strategy, chief, work_dir, model_dir, splits):
  """Trains on splits['train']; on the chief, saves the best weights, evaluates and exports.

  Returns the evaluation report on the chief, None on other workers.
  """
  tf.io.gfile.makedirs(work_dir)
  static = isinstance(
    strategy, (tf.distribute.TPUStrategy, tf.distribute.MultiWorkerMirroredStrategy)
  )  # Their replicas need static shapes and equal step counts.
  sizes = {name: input_pipeline.count(split) for name, split in splits.items()}
  logging.info("Dataset %s in %s: %s", config.dataset, config.data_dir, sizes)
  batch = config.global_batch_size
  steps, val_steps, steps_per_execution = fitting.plan_steps(
    sizes["train"], sizes["validation"], batch, config.steps_per_execution, static
  )
  train_config = dataclasses.replace(
    splits["train"], training=True, drop_remainder=True, repeat=True
  )
  val_config = dataclasses.replace(splits["validation"], repeat=static, pad_to_steps=val_steps or 0)
  train_ds = input_pipeline.distributed_dataset(strategy, train_config)
  val_ds = input_pipeline.distributed_dataset(strategy, val_config)

  def compile_model(model, learning_rate, epochs):
    fitting.compile_for_training(
      model,
      fitting.learning_rate_schedule(learning_rate, steps, epochs, config.warmup_epochs),
      config.weight_decay,
      steps_per_execution,
    )

  two_phase = config.mode == "two_phase"
  with strategy.scope():
    model = model_lib.build_model(
      config.image_size, config.weights, config.dropout, config.mode, seed=config.seed
    )
    compile_model(model, config.learning_rate, config.epochs)

  best_path = os.path.join(work_dir, "best.weights.h5")
  checkpoint = fitting.BestCheckpoint(best_path)
  shared_callbacks = [
    keras.callbacks.TensorBoard(os.path.join(work_dir, "logs")),
    keras.callbacks.TerminateOnNaN(),
  ]
  if config.early_stopping_patience:
    shared_callbacks.append(
      keras.callbacks.EarlyStopping("val_auc", mode="max", patience=config.early_stopping_patience)
    )

  def fit(phase, fit_model, initial_epoch, epochs, train, val, callbacks):
    # The backup is kept after the phase, so a restarted run skips finished phases.
    backup = fitting.Backup(os.path.join(work_dir, "backup", phase))
    epochs = backup.final_epoch(epochs)
    logging.info("Phase %s: epochs %d-%d, %d steps each", phase, initial_epoch + 1, epochs, steps)
    # Keras 3 leaves the epoch a BackupAndRestore restored on the model, where it
    # would override the next phase's initial_epoch.
    fit_model._initial_epoch = None
    return fit_model.fit(
      train,
      epochs=epochs,
      initial_epoch=initial_epoch,
      steps_per_epoch=steps,
      validation_data=val,
      validation_steps=val_steps,
      callbacks=[backup, *callbacks],
      verbose=2,
    )

  if config.cache_features:
    # The head alone, on cached bottleneck features: it shares its layers with
    # `model`, so training it trains the model's head.
    cache_dir = os.path.join(work_dir, "feature_cache")
    cached = {
      name: feature_cache.cached_features(model, splits[name], config.weights, views, cache_dir)
      for name, views in (("train", config.cache_views), ("validation", 1))
    }
    with strategy.scope():
      head = model_lib.head(model)
      compile_model(head, config.learning_rate, config.epochs)
    head_train, head_val = (
      strategy.distribute_datasets_from_function(
        lambda ctx, name=name: feature_cache.batched(
          cached[name], batch, name == "train", val_steps or 0, config.seed, ctx
        )
      )
      for name in ("train", "validation")
    )
    # No best checkpoint here: it would hold the head's weights only.
    fit("head_cached", head, 0, config.epochs, head_train, head_val, shared_callbacks)
  else:
    phase = "head" if two_phase else "end_to_end"
    fit(phase, model, 0, config.epochs, train_ds, val_ds, [*shared_callbacks, checkpoint])
  if two_phase and config.fine_tune_epochs:
    with strategy.scope():
      trainable = model_lib.unfreeze_top_blocks(model, config.fine_tune_blocks)
      compile_model(model, config.fine_tune_learning_rate, config.fine_tune_epochs)
    logging.info("Unfroze the top %d blocks: %d base layers", config.fine_tune_blocks, trainable)
    fit(
      "fine_tune",
      model,
      config.epochs,
      config.epochs + config.fine_tune_epochs,
      train_ds,
      val_ds,
      [*shared_callbacks, checkpoint],
    )

  if not chief:
    return None  # Only the chief writes the final outputs.
  if checkpoint.record:
    model.load_weights(best_path)
    best = checkpoint.record
    exported = f"best: epoch {best['epoch']}, val AUC {best['val_auc']:.4f}"
  else:  # Only the cached head phase ran, or no epoch had a finite validation AUC.
    exported = "last epoch (no validation AUC was checkpointed)"
  logging.info("Evaluating and exporting the weights of the %s", exported)
  model.save(os.path.join(model_dir, "model.keras"))
  logging.info("Wrote %s", os.path.join(model_dir, "model.keras"))
  # Evaluate what was saved on one device (no collectives, whatever the
  # strategy), fit the OOD detector, and export with the chosen threshold.
  # A fold's model serves its estimate; the deployable model is a run without --folds.
  report = finish.finish_run(
    model_dir, splits, config.seed, {"weights": exported}, export_model=not config.folds
  )
  return report


def run():
  """Console-script entry point (txr-train)."""
  cli.run(main)


if __name__ == "__main__":
  run()
