"""What `fit` needs beyond the model: compile settings, the schedule and the best checkpoint."""

import json
import math

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


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
  """Saves the weights of the best validation AUC; the best score survives a restart.

  ModelCheckpoint forgets its best score when the process ends, so a resumed
  run would overwrite the checkpoint with its first epoch, however poor. The
  score and epoch are kept in `<path>.json` and read back as the threshold.
  """

  def __init__(self, path: str):
    """Watches val_auc; saves weights to `path` (a .weights.h5) when it improves.

    Args:
      path: the weights file, local or gs://; its record is `path + '.json'`.
    """
    self.record_path = path + ".json"
    self.record = {}
    if tf.io.gfile.exists(self.record_path) and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(self.record_path) as f:
        self.record = json.load(f)
    super().__init__(
      path,
      monitor="val_auc",
      mode="max",
      save_best_only=True,
      save_weights_only=True,
      initial_value_threshold=self.record.get("val_auc"),
    )

  def on_epoch_end(self, epoch, logs=None):
    """Saves as ModelCheckpoint does, and records a new best score beside the weights."""
    best = self.best
    super().on_epoch_end(epoch, logs)
    if self.best != best:
      self.record = {"val_auc": float(self.best), "epoch": epoch + 1}
      with tf.io.gfile.GFile(self.record_path, "w") as f:
        json.dump(self.record, f)
