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

import json
import os

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf
import tensorflow_datasets as tfds

import txr_data  # noqa: F401  (registers the builders)
from txr_model import cli
from txr_model import evaluation
from txr_model import finish
from txr_model import fitting
from txr_model import input_pipeline
from txr_model import keras_compat
from txr_model import metrics
from txr_model import model as model_lib
from txr_model import model_dir_lock
from txr_model import report_files
from txr_model import report_text
from txr_model import run_config
from txr_model import run_dir
from txr_model import strategy as strategy_lib

# The flags of a run's settings: RunConfig.from_flags reads each by its name (one field per
# flag), so none needs a holder here.
flags.DEFINE_string(
  "dataset",
  "shenzhen_cxr/512",
  "TFDS name/config to train on; join several with + (shenzhen_cxr/512+montgomery_cxr/512).",
)
flags.DEFINE_string("data_dir", None, "TFDS data dir (local or gs://).")
flags.DEFINE_string(
  "manual_dir", None, "Source data for building the dataset if it is not built yet."
)
flags.DEFINE_string("model_dir", None, "Where outputs go (local or gs://).")
flags.DEFINE_enum("strategy", "default", strategy_lib.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address; empty for a TPU VM.")
flags.DEFINE_integer("num_gpus", -1, "GPUs to use; -1 for all visible.", lower_bound=-1)
flags.DEFINE_integer(
  "num_cpu_devices", 1, "Split the CPU into this many logical devices.", lower_bound=1
)
flags.DEFINE_enum(
  "backbone",
  model_lib.DEFAULT_BACKBONE,
  list(model_lib.BACKBONES),
  "The Keras application under the head: inception_v3 (the default), densenet121 (the best"
  " published Shenzhen results), mobilenet_v3_small (small and fast, for a laptop).",
)
flags.DEFINE_integer(
  "image_size", 299, "Model input size in px (inception_v3: 75 or more; others 32).", lower_bound=32
)
flags.DEFINE_integer("global_batch_size", 32, "Batch size over all replicas.", lower_bound=1)
flags.DEFINE_string(
  "weights", "imagenet", "Base weights: 'imagenet', a weights file path, or 'none'."
)
flags.DEFINE_string(
  "init_from",
  "",
  "A finished txr-train run folder (local or gs://) whose whole model, base and head, this run"
  " starts from instead of --weights: fine-tuning on a site's own films. Its backbone and"
  " image size must be this run's.",
)
flags.DEFINE_enum(
  "mode",
  "two_phase",
  model_lib.MODES,
  "two_phase: head on a frozen pretrained base, then the top blocks (needs --weights)."
  " end_to_end: every layer from the start, BatchNorm training (from scratch: --weights=none).",
)
flags.DEFINE_float("dropout", 0.2, "Dropout before the classifier.", 0.0, 0.99)
flags.DEFINE_integer(
  "epochs", 5, "Epochs of phase 1 (head only), or of the one end_to_end phase.", lower_bound=1
)
flags.DEFINE_integer(
  "fine_tune_epochs",
  5,
  "Epochs of phase 2 (top blocks unfrozen); 0 skips it. two_phase only.",
  lower_bound=0,
)
flags.DEFINE_integer("fine_tune_blocks", 2, "Top inception blocks to unfreeze in phase 2.", 1, 11)
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate of phase 1 (or of end_to_end).", 0.0)
flags.DEFINE_float("fine_tune_learning_rate", 1e-5, "Peak learning rate of phase 2.", 0.0)
flags.DEFINE_float("weight_decay", 1e-3, "AdamW's decoupled weight decay.", 0.0)
flags.DEFINE_float(
  "warmup_epochs", 1.0, "Linear learning-rate warm-up of each phase, in epochs.", 0.0
)
_OVERWRITE = flags.DEFINE_bool(
  "overwrite",
  False,
  "Train afresh in a --model_dir that holds an earlier run: what that run left there"
  " (backups, best checkpoint, model, export, reports) is removed first. Without it, a"
  " rerun resumes the earlier run, and is refused if its settings differ.",
)
flags.DEFINE_integer(
  "early_stopping_patience",
  0,
  "Stop a phase after this many epochs without a better validation AUC; 0: never.",
  lower_bound=0,
)
flags.DEFINE_enum(
  "mixed_precision",
  "auto",
  ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
  "Keras dtype policy; auto: bfloat16 on TPU, float16 on GPU, float32 on CPU.",
)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer(
  "folds",
  0,
  "0: one run on the dataset's train/validation/test splits. K (3-10): K-fold"
  " cross-validation: every image of every split is dealt, by patient, into K folds"
  " balanced per dataset and label; run k tests on fold k, validates on fold k+1 and trains"
  f" on the rest, into {run_dir.fold_name('<k>')}/ (no export); {run_dir.CV_METRICS} pools"
  " every image's score from the run that did not train on it.",
  lower_bound=0,
  upper_bound=10,
)
flags.DEFINE_bool(
  "cache_features",
  False,
  "Phase 1 trains the head on pooled base features computed once (retrain.py's bottlenecks).",
)
flags.DEFINE_integer(
  "cache_views", 4, "Views per training image in the cache (view 0 unaugmented).", lower_bound=1
)
flags.DEFINE_integer(
  "steps_per_execution", 1, "Training steps per tf.function call (raise on TPU).", lower_bound=1
)

flags.DEFINE_string(
  "age_bands",
  metrics.AGE_BANDS,
  "Age bands of the evaluation's subgroups, in years: contiguous from 0, the last open-ended.",
)

_KEEP_OPTIMIZER = flags.DEFINE_bool(
  "keep_optimizer",
  False,
  "Keep the optimizer's state in model.keras (about twice the size), to go on training it"
  " later with your own code; txr itself never needs it.",
)

_FLAGS = flags.FLAGS
flags.mark_flags_as_required(["data_dir", "model_dir"])
flags.register_validator("age_bands", lambda text: _parses(metrics.parse_age_bands, text))
flags.register_validator(
  "folds", lambda k: k == 0 or k >= 3, "--folds needs 3 or more (train, validation, test)."
)


def _parses(parse, text) -> bool:
  """True if `parse(text)` succeeds; else its error, as the flag's (absl prints it)."""
  try:
    parse(text)
  except ValueError as e:
    raise flags.ValidationError(str(e)) from None
  return True


@flags.multi_flags_validator(
  ["mode", "weights", "init_from"],
  "--mode=two_phase needs pretrained --weights (imagenet or a file) or --init_from: a frozen"
  " random base gives the head nothing to learn. From scratch, use --mode=end_to_end"
  " --weights=none.",
)
def _two_phase_needs_pretrained_weights(values):
  pretrained = values["weights"].lower() != "none" or values["init_from"]
  return values["mode"] != "two_phase" or bool(pretrained)


@flags.multi_flags_validator(["backbone", "image_size"], "--image_size is too small.")
def _size_fits_the_backbone(values):
  least = model_lib.BACKBONES[values["backbone"]].min_size
  if values["image_size"] < least:
    raise flags.ValidationError(
      f"--image_size={values['image_size']}: {values['backbone']} needs {least} or more."
    )
  return True


@flags.multi_flags_validator(["backbone", "fine_tune_blocks"], "Too many --fine_tune_blocks.")
def _blocks_fit_the_backbone(values):
  blocks = model_lib.BACKBONES[values["backbone"]].blocks
  if values["fine_tune_blocks"] > blocks:
    raise flags.ValidationError(
      f"--fine_tune_blocks={values['fine_tune_blocks']}: {values['backbone']} has {blocks} blocks."
    )
  return True


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


def main(argv):
  """Builds the dataset if needed, trains (or cross-validates), evaluates and exports."""
  del argv
  config = run_config.RunConfig.from_flags(_FLAGS)
  if config.mode == "end_to_end" and _FLAGS["fine_tune_epochs"].present:
    logging.warning("--mode=end_to_end has one phase: --fine_tune_* flags are not used.")
  # Every usage error before anything is created; neither check runs a TF op.
  cli.check_folder_flag("model_dir", config.model_dir)
  if not _OVERWRITE.value:
    _check_same_recipe(config)
  if config.init_from:
    _check_parent(config)
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
    _run(config, strategy, builders, chief, work_dir)
    return
  try:
    with model_dir_lock.hold(model_dir):
      _run(config, strategy, builders, chief, work_dir)
  except model_dir_lock.ModelDirInUseError as e:
    raise app.UsageError(str(e)) from None


def _check_same_recipe(config):
  """Refuses a rerun into --model_dir whose settings differ from the run already there.

  The rerun would resume that run's backups and best checkpoint, train nothing
  new, and then report and export the old weights under the new settings.
  """
  try:
    earlier = run_config.RunConfig.load(config.model_dir)
  except ValueError as e:
    raise app.UsageError(f"{e} Or pass --overwrite.") from None
  differences = [] if earlier is None else config.differences(earlier)
  if differences:
    raise app.UsageError(
      f"--model_dir={config.model_dir} holds a run with other settings"
      f" ({'; '.join(differences)}): resuming it would train nothing and export its weights"
      " under the new settings. Give another --model_dir, or pass --overwrite to train afresh"
      " there."
    )


def _check_parent(config):
  """Refuses an --init_from that is not a finished run with this run's backbone and image size."""
  parent = config.init_from
  try:
    earlier = run_config.RunConfig.load(parent)
  except ValueError as e:
    raise app.UsageError(f"--init_from={parent}: {e}") from None
  if earlier is None:
    raise app.UsageError(
      f"--init_from={parent}: no {run_config.FILE} there; give the --model_dir of a finished"
      " txr-train run."
    )
  if (earlier.backbone, earlier.image_size) != (config.backbone, config.image_size):
    raise app.UsageError(
      f"--init_from={parent}: its model is {earlier.backbone} at {earlier.image_size} px, this"
      f" run's {config.backbone} at {config.image_size} px; pass --backbone={earlier.backbone}"
      f" --image_size={earlier.image_size}, or start from another run."
    )
  if not tf.io.gfile.exists(os.path.join(parent, run_dir.MODEL)):
    where = "a cross-validation run: give a run without --folds" if earlier.folds else (
      "it has not finished: rerun its command to finish it"
    )  # fmt: skip
    raise app.UsageError(f"--init_from={parent}: no {run_dir.MODEL} there ({where}).")


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


def _run(config, strategy, builders, chief, work_dir):
  """Builds the datasets if needed, then trains once or per cross-validation fold."""
  model_dir = config.model_dir
  for builder in builders:
    _prepare(builder, config, chief)
  # Seeded only after the build: TFDS names its temporary build folder with
  # Python's `random`, so two runs seeded alike would build into the same one.
  keras.utils.set_random_seed(config.seed)
  if _OVERWRITE.value:
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
    report = _train(config, strategy, chief, work_dir, model_dir, splits)
    if report:
      print(report_text.describe_run(report, model_dir))
    return
  reports = {}
  for k in range(config.folds):
    splits = input_pipeline.run_splits(base, config.folds, k)
    fold_work_dir, fold_dir = run_dir.fold_dir(work_dir, k), run_dir.fold_dir(model_dir, k)
    report = _train(config, strategy, chief, fold_work_dir, fold_dir, splits)
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


def _train(config, strategy, chief, work_dir, model_dir, splits):
  """Trains on splits['train']; on the chief, saves the best weights, evaluates and exports.

  A run (or fold) that finished before is not trained, evaluated or exported
  again: its outputs are in place (and what other commands added to export/
  stays). Returns the evaluation report on the chief, None on other workers.
  """
  finished = os.path.join(model_dir, run_dir.FINISHED)
  if tf.io.gfile.exists(finished):
    if not chief:
      return None
    logging.info("%s: finished before (%s); nothing to do.", model_dir, run_dir.FINISHED)
    _remove_resume_state(work_dir)  # In case a kill came between the record and the removal.
    with tf.io.gfile.GFile(os.path.join(model_dir, run_dir.METRICS)) as f:
      return json.load(f)
  model, checkpoint = fitting.train_model(config, strategy, work_dir, splits)
  if not chief:
    return None  # Only the chief writes the final outputs.
  weights = fitting.restore_best(model, checkpoint)
  logging.info("Saving the weights of the %s", weights)
  path = os.path.join(model_dir, run_dir.MODEL)
  fitting.save_model(model, path, keep_optimizer=_KEEP_OPTIMIZER.value)
  logging.info("Wrote %s", path)
  # Evaluate what was saved on one device (no collectives, whatever the
  # strategy), fit the OOD detector, and export with the chosen threshold.
  # A fold's model serves its estimate; the deployable model is a run without --folds.
  report = finish.finish_run(
    model_dir,
    splits,
    config.seed,
    {"weights": weights, **_recipe(config)},
    export_model=not config.folds,
    age_bands=config.age_bands,
  )
  with tf.io.gfile.GFile(finished, "w") as f:
    json.dump({"weights": weights}, f)
  _remove_resume_state(work_dir)
  return report


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


def run():
  """Console-script entry point (txr-train)."""
  cli.run(main)


if __name__ == "__main__":
  run()
