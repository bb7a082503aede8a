r"""txr-train: trains a classifier (InceptionV3 by default) on TFDS chest X-rays, distributed.

  txr-train --flagfile=configs/demo.cfg

--mode=two_phase (pretrained weights): phase 1 trains the head on a frozen
base; phase 2 unfreezes the top inception blocks at a lower learning rate.
--mode=end_to_end (from scratch, --weights=none): one phase trains every
layer. Each phase warms its learning rate up for an epoch, then follows a
cosine decay. Evaluation and export use the weights of the epoch with the best
validation AUC. A killed run restarted with the same command continues where
it stopped (BackupAndRestore). Outputs go to --model_dir.

This module defines and checks the flags without TensorFlow, so a usage error
is answered at once; the run itself is training.py's.
"""

from absl import flags
from absl import logging

from txr_model import choices
from txr_model import cli
from txr_model import metrics
from txr_model import run_dir

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
flags.DEFINE_enum("strategy", "default", choices.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or grpc:// address; empty for a TPU VM.")
flags.DEFINE_integer("num_gpus", -1, "GPUs to use; -1 for all visible.", lower_bound=-1)
flags.DEFINE_integer(
  "num_cpu_devices", 1, "Split the CPU into this many logical devices.", lower_bound=1
)
flags.DEFINE_enum(
  "backbone",
  choices.DEFAULT_BACKBONE,
  list(choices.BACKBONES),
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
  choices.MODES,
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
  least = choices.BACKBONES[values["backbone"]].min_size
  if values["image_size"] < least:
    raise flags.ValidationError(
      f"--image_size={values['image_size']}: {values['backbone']} needs {least} or more."
    )
  return True


@flags.multi_flags_validator(["backbone", "fine_tune_blocks"], "Too many --fine_tune_blocks.")
def _blocks_fit_the_backbone(values):
  blocks = choices.BACKBONES[values["backbone"]].blocks
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
  # Imported only now: every flag error above was answered without TensorFlow.
  from txr_model import run_config

  config = run_config.RunConfig.from_flags(_FLAGS)
  # A rerun with other settings, or an --init_from it cannot start from, is answered
  # before TensorFlow loads too.
  run_config.check_model_dirs(config, _OVERWRITE.value)
  from txr_model import training

  if config.mode == "end_to_end" and _FLAGS["fine_tune_epochs"].present:
    logging.warning("--mode=end_to_end has one phase: --fine_tune_* flags are not used.")
  training.run(config, overwrite=_OVERWRITE.value, keep_optimizer=_KEEP_OPTIMIZER.value)


def run():
  """Console-script entry point (txr-train)."""
  cli.run(main)


if __name__ == "__main__":
  run()
