"""What `fit` needs beyond the model: compile settings, the schedule and the best checkpoint."""

import json
import math
import os

from absl import logging
import keras
import tensorflow as tf


def learning_rate_schedule(
  peak: float, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> keras.optimizers.schedules.LearningRateSchedule:
  """Linear warm-up from 0 to `peak`, then cosine decay to 0 at the last step.

  The warm-up keeps the first updates small while the head and (from scratch)
  BatchNorm statistics settle; the decay lets the last epochs converge.

  Args:
    peak: the learning rate at the end of the warm-up.
    steps_per_epoch: training steps per epoch.
    epochs: epochs of the phase.
    warmup_epochs: length of the warm-up, in epochs (fractions allowed).

  Returns:
    A schedule of the optimizer's step count (which BackupAndRestore restores).
  """
  total = max(1, steps_per_epoch * epochs)
  warmup = min(total - 1, round(steps_per_epoch * warmup_epochs))
  return keras.optimizers.schedules.CosineDecay(
    0.0 if warmup else peak, total - warmup, warmup_target=peak if warmup else None,
    warmup_steps=warmup,
  )  # fmt: skip


def plan_steps(
  train_examples: int,
  validation_examples: int,
  global_batch_size: int,
  steps_per_execution: int,
  static: bool,
) -> tuple[int, int | None, int]:
  """An epoch's training steps, a validation pass's steps and the steps per execution.

  Args:
    train_examples: examples in the training split.
    validation_examples: examples in the validation split.
    global_batch_size: examples per step over all replicas.
    steps_per_execution: the requested steps per tf.function call.
    static: whether validation runs a fixed number of padded steps (TPU,
      multi-worker); otherwise it reads the split to its end (None).

  Returns:
    (steps per epoch, validation steps or None, steps per execution): the
    largest divisor of the steps per epoch not above the requested one, and
    validation steps a multiple of it, so every pass runs exactly its steps.
  """
  steps = max(1, train_examples // global_batch_size)
  # Keras runs whole executions: 5 steps at 3 per execution would run 6.
  used = max(d for d in range(1, min(steps_per_execution, steps) + 1) if steps % d == 0)
  if used != steps_per_execution:
    logging.warning(
      "--steps_per_execution=%d does not divide an epoch's %d steps: using %d.",
      steps_per_execution, steps, used,
    )  # fmt: skip
  val_steps = None
  if static:  # Whole executions of padded batches; the extra ones are all weight 0.
    val_steps = used * math.ceil(validation_examples / (global_batch_size * used))
  return steps, val_steps, used


def compile_for_training(
  model: keras.Model,
  learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
  weight_decay: float,
  steps_per_execution: int,
) -> None:
  """Compiles `model` with AdamW, binary cross-entropy and the metrics the run monitors.

  Args:
    model: a model with one sigmoid output.
    learning_rate: a rate or a schedule (`learning_rate_schedule`).
    weight_decay: AdamW's decoupled weight decay.
    steps_per_execution: training steps per tf.function call.
  """
  model.compile(
    optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay),
    loss=keras.losses.BinaryCrossentropy(),
    # Weighted: the weight-0 blanks that pad static validation must not count
    # (Keras 3 applies sample_weight to weighted_metrics only). Unweighted data,
    # such as the training batches, count every example.
    weighted_metrics=[
      keras.metrics.AUC(name="auc"),
      keras.metrics.BinaryAccuracy(name="accuracy"),
      keras.metrics.Precision(name="precision"),
      keras.metrics.Recall(name="recall"),
    ],
    steps_per_execution=steps_per_execution,
  )


class BestCheckpoint(keras.callbacks.Callback):
  """Saves the weights of the best validation AUC, ties going to the lower validation loss.

  AUC ranks, so it often plateaus (1.0 on a small validation split from an
  early epoch on); the loss still tells the better-calibrated epoch. The
  record (score, loss, epoch) is kept in `<path>.json`, so a resumed run never
  replaces the weights with a worse epoch.
  """

  def __init__(self, path: str):
    """Saves weights to `path` (a .weights.h5, local or gs://) when the epoch is the best.

    Args:
      path: the weights file; its record is `path + '.json'`.
    """
    super().__init__()
    self.path, self.record_path = path, path + ".json"
    self.record = {}
    if tf.io.gfile.exists(self.record_path) and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(self.record_path) as f:
        self.record = json.load(f)

  def _is_better(self, auc: float, loss: float) -> bool:
    if not self.record:
      return True
    best_loss = self.record.get("val_loss", math.inf)
    return auc > self.record["val_auc"] or (auc == self.record["val_auc"] and loss < best_loss)

  def on_epoch_end(self, epoch, logs=None):
    """Saves the weights and the record if this epoch beats the best one."""
    logs = logs or {}
    auc, loss = float(logs.get("val_auc", math.nan)), float(logs.get("val_loss", math.nan))
    if not math.isfinite(auc) or not self._is_better(
      auc, loss if math.isfinite(loss) else math.inf
    ):
      return
    # Written beside and renamed over the last best, so a kill never leaves it unreadable.
    partial = self.path.removesuffix(".weights.h5") + ".partial.weights.h5"
    self.model.save_weights(partial, overwrite=True)
    tf.io.gfile.rename(partial, self.path, overwrite=True)
    self.record = {"val_auc": auc, "val_loss": loss, "epoch": epoch + 1}
    with tf.io.gfile.GFile(self.record_path, "w") as f:
      json.dump(self.record, f)


class Backup(keras.callbacks.BackupAndRestore):
  """BackupAndRestore that survives a kill during its save and remembers a finished phase.

  Keras writes the backup in place each epoch, so a kill during the save (a
  1-3 s window) leaves a file that no restart can read. This keeps the
  previous epoch's backup too and resumes from it when the latest does not
  load; with none, the phase starts again. The backup is kept after the phase
  ends, and `finished.json` records the last epoch of a phase that stopped
  early, so a restart skips it instead of training it on to --epochs.
  """

  def __init__(self, backup_dir: str):
    """Backs up into `backup_dir` (local or gs://) at the end of each epoch."""
    super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)
    self.finished_path = os.path.join(backup_dir, "finished.json")

  def final_epoch(self, epochs: int) -> int:
    """The epoch at which to end the phase: the recorded one if it finished, else `epochs`."""
    if not tf.io.gfile.exists(self.finished_path):
      return epochs
    with tf.io.gfile.GFile(self.finished_path) as f:
      return min(epochs, json.load(f)["epoch"])

  def on_train_begin(self, logs=None):
    """Restores the latest backup, else the one before it, else starts the phase afresh."""
    try:
      self._load_model()
      return
    except (OSError, ValueError) as e:  # h5py's errors are OSErrors; a cut JSON, ValueError.
      error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    previous = [self._prev_weights_path, self._prev_training_metadata_path]
    if all(tf.io.gfile.exists(p) for p in previous):
      logging.warning(
        "The backup in %s is unreadable (%s): resuming from the epoch before.",
        self.backup_dir, error,
      )  # fmt: skip
      for path in previous:
        tf.io.gfile.copy(path, path.removesuffix(".bkp"), overwrite=True)
      self._load_model()
      return
    logging.warning(
      "The backup in %s is unreadable (%s) and none is older: starting the phase again.",
      self.backup_dir, error,
    )  # fmt: skip
    for path in (self._weights_path, self._training_metadata_path):
      if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)

  def on_train_end(self, logs=None):
    """Records the last epoch of a phase that stopped early, beside the backup."""
    super().on_train_end(logs)
    # A phase that ran all its epochs needs no record: its backup's epoch says so.
    if 0 < self._current_epoch < self.params["epochs"]:
      with tf.io.gfile.GFile(self.finished_path, "w") as f:
        json.dump({"epoch": self._current_epoch}, f)
