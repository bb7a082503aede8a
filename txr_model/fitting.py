"""Fitting the model: the training phases, and what `fit` needs (schedule, checkpoint, backup).

`train_model` runs a run's phases in order: two_phase trains the head on the
frozen base (`fit_head`: on images, or on cached features), then the top
blocks (`fine_tune`); end_to_end trains every layer in one phase
(`fit_end_to_end`). Each phase compiles the model for itself
(`compile_phase`) and fits through `fit_phase`, which backs it up per epoch.
"""

import dataclasses
import functools
import json
import math
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_model import augmentation
from txr_model import feature_cache
from txr_model import input_pipeline
from txr_model import model as model_lib
from txr_model import run_config
from txr_model import run_dir


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
    Where that divisor is under half the request (a prime number of steps,
    say), the epoch is rounded down to a multiple of the request instead: a
    TPU would lose more to short executions than the few batches an epoch
    leaves out (each epoch reshuffles, so no image is left out for good).
  """
  steps = max(1, train_examples // global_batch_size)
  wanted = min(steps_per_execution, steps)
  # Keras runs whole executions: 5 steps at 3 per execution would run 6.
  used = max(d for d in range(1, wanted + 1) if steps % d == 0)
  if 2 * used <= wanted:
    logging.warning(
      "--steps_per_execution=%d: an epoch's %d steps rounded down to %d, a multiple of it"
      " (its largest divisor, %d, would run short executions).",
      steps_per_execution, steps, steps - steps % wanted, used,
    )  # fmt: skip
    steps, used = steps - steps % wanted, wanted
  elif used != steps_per_execution:
    logging.warning(
      "--steps_per_execution=%d does not divide an epoch's %d steps: using %d.",
      steps_per_execution, steps, used,
    )  # fmt: skip
  val_steps = None
  if static:  # Whole executions of padded batches; the extra ones are all weight 0.
    val_steps = used * math.ceil(validation_examples / (global_batch_size * used))
  return steps, val_steps, used


@keras.saving.register_keras_serializable(package="txr")
def binary_crossentropy(y_true, y_pred):
  """Each image's binary cross-entropy, for labels [n] or [n, 1] (as the loss takes them)."""
  y_true = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), keras.ops.shape(y_pred))
  return keras.losses.binary_crossentropy(y_true, y_pred)


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
      # The loss over the real images only: Keras's own val_loss divides by the padded
      # batch (measured: 0.455 reported for 0.682 under multi-worker padding).
      keras.metrics.MeanMetricWrapper(binary_crossentropy, name="bce"),
      keras.metrics.BinaryAccuracy(name="accuracy"),
      keras.metrics.Precision(name="precision"),
      keras.metrics.Recall(name="recall"),
    ],
    steps_per_execution=steps_per_execution,
  )
  # Built now, not by the first step: a tf.function whose first trace creates variables
  # is traced a second time without them, and under TF's default strategy Keras leaves
  # the optimizer's slots to that trace (measured: the first epoch of MobileNetV3-Small at
  # 32 px 47 s -> 24 s; InceptionV3 traces for about half a minute less).
  model.optimizer.build(model.trainable_variables)


class EarlyStopping(keras.callbacks.EarlyStopping):
  """Stops a phase after `patience` epochs without a better validation AUC, across restarts.

  Keras's EarlyStopping starts counting afresh in every `fit`, so a phase
  killed and restarted ran on past where it would have stopped. This keeps
  its count after each epoch in the phase's backup folder, keyed by the epochs
  done, and takes up the count of the epoch the restart resumes from.
  """

  def __init__(self, backup_dir: str, patience: int):
    """Monitors val_auc; keeps its count in `<backup_dir>/early_stopping.json`."""
    super().__init__("val_auc", mode="max", patience=patience)
    self.state_path = os.path.join(backup_dir, "early_stopping.json")
    self._states, self._resumed = {}, False

  def on_train_begin(self, logs=None):
    """Resets as Keras does, then reads the counts kept by earlier runs of the phase."""
    super().on_train_begin(logs)
    self._states, self._resumed = {}, False
    if tf.io.gfile.exists(self.state_path):
      with tf.io.gfile.GFile(self.state_path) as f:
        self._states = json.load(f)

  def on_epoch_begin(self, epoch, logs=None):
    """At the first epoch run, takes up the count kept after the epochs already done."""
    if not self._resumed:
      self._resumed = True
      state = self._states.get(str(epoch))
      if state:
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]

  def on_epoch_end(self, epoch, logs=None):
    """Counts as Keras does, then keeps the count (before the backup of this epoch)."""
    super().on_epoch_end(epoch, logs)
    best = None if self.best is None else float(self.best)
    self._states[str(epoch + 1)] = {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}
    tf.io.gfile.makedirs(os.path.dirname(self.state_path))
    with tf.io.gfile.GFile(self.state_path, "w") as f:
      json.dump(self._states, f)


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
    self.partial = path.removesuffix(".weights.h5") + ".partial.weights.h5"
    self.partial_record = self.record_path + ".partial"
    self.record = {}
    if tf.io.gfile.exists(self.partial_record):  # A save was cut short: which step?
      if tf.io.gfile.exists(self.partial):  # Before the weights' rename: the old pair holds.
        tf.io.gfile.remove(self.partial_record)
      else:  # After it: the new weights are in place, and this is their record.
        tf.io.gfile.rename(self.partial_record, self.record_path, overwrite=True)
    if tf.io.gfile.exists(self.record_path) and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(self.record_path) as f:
        self.record = json.load(f)

  def _is_better(self, auc: float, loss: float) -> bool:
    if not self.record:
      return True
    best_loss = self.record.get("val_bce", math.inf)  # A record without it loses every tie.
    return auc > self.record["val_auc"] or (auc == self.record["val_auc"] and loss < best_loss)

  def on_epoch_end(self, epoch, logs=None):
    """Saves the weights and the record if this epoch beats the best one."""
    logs = logs or {}
    # The validation loss over the real images (compile_for_training's val_bce): the same
    # scale whatever the padding, so a restart with another batch size compares like with like.
    auc, loss = float(logs.get("val_auc", math.nan)), float(logs.get("val_bce", math.nan))
    if not math.isfinite(auc) or not self._is_better(
      auc, loss if math.isfinite(loss) else math.inf
    ):
      return
    # Weights and record written beside the last best and renamed over it, the weights
    # first: a kill at any step leaves a pair that matches (see __init__).
    record = {"val_auc": auc, "val_bce": loss, "epoch": epoch + 1}
    self.model.save_weights(self.partial, overwrite=True)
    with tf.io.gfile.GFile(self.partial_record, "w") as f:
      json.dump(record, f)
    tf.io.gfile.rename(self.partial, self.path, overwrite=True)
    tf.io.gfile.rename(self.partial_record, self.record_path, overwrite=True)
    self.record = record


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
    self._restored = False  # set by `restore`, which fit_phase calls before fit

  def final_epoch(self, epochs: int) -> int:
    """The epoch at which to end the phase: the recorded one if it finished, else `epochs`."""
    if not tf.io.gfile.exists(self.finished_path):
      return epochs
    with tf.io.gfile.GFile(self.finished_path) as f:
      return min(epochs, json.load(f)["epoch"])

  def restore(self, model: keras.Model) -> int | None:
    """Loads the phase's backup into `model` before `fit`: the epochs it had done, or None.

    `fit_phase` restores first so that the training data can start at the
    restored epoch (`input_pipeline.epoch_stream`); call it in the strategy's
    scope (the optimizer's variables may be built here).
    """
    self.set_model(model)
    self._restore()
    self._restored = True
    epoch, model._initial_epoch = model._initial_epoch, None
    return epoch

  def on_train_begin(self, logs=None):
    """Restores as `restore` does, unless `restore` ran before this `fit`."""
    if not self._restored:
      self._restore()

  def _restore(self):
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


@dataclasses.dataclass(frozen=True)
class Plan:
  """What every phase of one run (or cross-validation fold) shares; made by `plan`."""

  config: run_config.RunConfig
  strategy: tf.distribute.Strategy
  work_dir: str  # Backups, best weights, feature cache and logs.
  splits: dict  # The run's InputConfig per split name.
  steps: int  # Training steps per epoch.
  val_steps: int | None  # Steps per validation pass; None reads the split to its end.
  steps_per_execution: int
  train: object  # epochs -> the distributed training images of those epochs (`training_data`).
  validation: object
  callbacks: tuple  # Every phase's: TensorBoard, TerminateOnNaN (fit_phase adds EarlyStopping).
  checkpoint: BestCheckpoint  # The phases that train the whole model keep their best epoch.


def plan(
  config: run_config.RunConfig, strategy: tf.distribute.Strategy, work_dir: str, splits: dict
) -> Plan:
  """Counts the splits, plans the steps, makes the datasets and the shared callbacks.

  Args:
    config: the run's settings.
    strategy: the tf.distribute strategy the phases train under.
    work_dir: this process's folder for backups, checkpoints and logs.
    splits: the run's InputConfig per split name.

  Returns:
    The plan every phase follows.
  """
  static = isinstance(
    strategy, (tf.distribute.TPUStrategy, tf.distribute.MultiWorkerMirroredStrategy)
  )  # Their replicas need static shapes and equal step counts.
  sizes = {name: input_pipeline.count(split) for name, split in splits.items()}
  logging.info("Dataset %s in %s: %s", config.dataset, config.data_dir, sizes)
  steps, val_steps, steps_per_execution = plan_steps(
    sizes["train"], sizes["validation"], config.global_batch_size, config.steps_per_execution,
    static,
  )  # fmt: skip
  train = dataclasses.replace(
    splits["train"], training=True, drop_remainder=True, repeat=True, epoch_steps=steps
  )
  validation = dataclasses.replace(splits["validation"], repeat=static, pad_to_steps=val_steps or 0)
  callbacks = [keras.callbacks.TensorBoard(os.path.join(work_dir, run_dir.LOGS))]
  callbacks.append(keras.callbacks.TerminateOnNaN())
  return Plan(
    config, strategy, work_dir, splits, steps, val_steps, steps_per_execution,
    functools.partial(training_data, strategy, train),
    input_pipeline.distributed_dataset(strategy, validation),
    tuple(callbacks), BestCheckpoint(os.path.join(work_dir, run_dir.BEST_WEIGHTS)),
  )  # fmt: skip


def training_data(strategy: tf.distribute.Strategy, train, epochs: range):
  """The distributed training images of `epochs` (see `input_pipeline.epoch_stream`)."""
  return input_pipeline.distributed_dataset(strategy, dataclasses.replace(train, epochs=epochs))


def train_model(
  config: run_config.RunConfig, strategy: tf.distribute.Strategy, work_dir: str, splits: dict
) -> tuple[keras.Model, BestCheckpoint]:
  """Trains a new model on splits['train'] through the phases of --mode.

  Args:
    config: the run's settings.
    strategy: the tf.distribute strategy to train under.
    work_dir: this process's folder for backups, checkpoints and logs.
    splits: the run's InputConfig per split name.

  Returns:
    The model, with its last epoch's weights, and the best checkpoint
    (`restore_best` loads it).
  """
  tf.io.gfile.makedirs(work_dir)
  run = plan(config, strategy, work_dir, splits)
  with strategy.scope():
    model = model_lib.build_model(
      config.image_size,
      config.weights,
      config.dropout,
      config.mode,
      seed=config.seed,
      backbone=config.backbone,
      init_from=config.init_from and os.path.join(config.init_from, run_dir.MODEL),
    )
    compile_phase(run, model, config.learning_rate, config.epochs)
  if config.mode == "end_to_end":
    fit_end_to_end(run, model)
  else:
    fit_head(run, model)
    if config.fine_tune_epochs:
      recover_from_divergence(model, run.checkpoint, "head")  # never fine-tune NaN weights
      fine_tune(run, model)
  recover_from_divergence(model, run.checkpoint, "last")
  return model, run.checkpoint


def recover_from_divergence(model: keras.Model, checkpoint: BestCheckpoint, phase: str) -> None:
  """After a phase TerminateOnNaN stopped: go on from the best epoch, or stop saying what to do.

  Args:
    model: the model after the phase.
    checkpoint: the run's best checkpoint.
    phase: the phase's name, for the messages.

  Raises:
    FloatingPointError: the weights are not finite and no epoch was checkpointed.
  """
  if all(np.isfinite(w).all() for w in model.get_weights()):
    return
  if not checkpoint.record:
    raise FloatingPointError(
      f"The {phase} phase diverged (a NaN loss) before any epoch was checkpointed: lower"
      " --learning_rate (or --fine_tune_learning_rate) and train afresh with --overwrite."
    )
  logging.warning(
    "The %s phase diverged (a NaN loss): going on from the best epoch so far (%d).",
    phase, checkpoint.record["epoch"],
  )  # fmt: skip
  model.load_weights(checkpoint.path)


def compile_phase(run: Plan, model: keras.Model, learning_rate: float, epochs: int) -> None:
  """Compiles `model` for a phase of `epochs` epochs peaking at `learning_rate`.

  Call it in the strategy's scope.
  """
  schedule = learning_rate_schedule(learning_rate, run.steps, epochs, run.config.warmup_epochs)
  compile_for_training(model, schedule, run.config.weight_decay, run.steps_per_execution)


def fit_phase(run, phase, model, initial_epoch, epochs, train, validation, callbacks):
  """Fits `model` from `initial_epoch` to `epochs`, backed up under backup/<phase>.

  Args:
    run: the plan.
    phase: the phase's name, in the log and its backup folder.
    model: the compiled model to fit.
    initial_epoch: epochs before this phase.
    epochs: the epoch this phase ends at, counted from the run's start.
    train: the epochs to train (a range) -> their training data.
    validation: the validation dataset.
    callbacks: the phase's callbacks besides its backup.

  Returns:
    The History of `model.fit`.
  """
  # The backup is kept after the phase, so a restarted run skips finished phases.
  backup_dir = os.path.join(run.work_dir, run_dir.BACKUP, phase)
  backup = Backup(backup_dir)
  if run.config.early_stopping_patience:
    callbacks = [*callbacks, EarlyStopping(backup_dir, run.config.early_stopping_patience)]
  epochs = backup.final_epoch(epochs)
  # Restored before fit, so that the data goes on at the restored epoch: a resumed run
  # reads, and augments, what an uninterrupted one reads from there.
  with run.strategy.scope():
    restored = backup.restore(model)
  start = initial_epoch if restored is None else restored
  logging.info("Phase %s: epochs %d-%d, %d steps each", phase, start + 1, epochs, run.steps)
  return model.fit(
    train(range(start, epochs)),
    epochs=epochs,
    initial_epoch=start,
    steps_per_epoch=run.steps,
    validation_data=validation,
    validation_steps=run.val_steps,
    # The backup last: every other callback (the best checkpoint above all) has seen
    # an epoch before it is backed up, so a kill between them redoes that epoch.
    callbacks=[*callbacks, backup],
    verbose=2,
  )


def fit_head(run: Plan, model: keras.Model):
  """Phase 1 of two_phase: the head on the frozen base, on images or on cached features."""
  if run.config.cache_features:
    return fit_cached_head(run, model)
  checkpointed = [*run.callbacks, run.checkpoint]
  return fit_phase(
    run, "head", model, 0, run.config.epochs, run.train, run.validation, checkpointed
  )


def fit_cached_head(run: Plan, model: keras.Model):
  """Phase 1 on pooled base features computed once (retrain.py's bottlenecks).

  The head alone trains: it shares its layers with `model`, so training it
  trains the model's head. No best checkpoint here: it would hold the head's
  weights only.
  """
  config, strategy = run.config, run.strategy
  cache_dir = os.path.join(run.work_dir, run_dir.FEATURE_CACHE)
  cached = {
    name: feature_cache.cached_features(model, run.splits[name], config.weights, views, cache_dir)
    for name, views in (("train", config.cache_views), ("validation", 1))
  }
  with strategy.scope():
    head = model_lib.head(model)
    compile_phase(run, head, config.learning_rate, config.epochs)
  batch, pad_to_steps = config.global_batch_size, run.val_steps or 0
  validation = strategy.distribute_datasets_from_function(
    lambda ctx: feature_cache.batched(cached["validation"], batch, False, pad_to_steps, 0, ctx)
  )

  def train(epochs):
    return strategy.distribute_datasets_from_function(
      lambda ctx: feature_cache.batched(
        cached["train"], batch, True, 0, config.seed, ctx, run.steps, epochs
      )
    )

  return fit_phase(run, "head_cached", head, 0, config.epochs, train, validation, run.callbacks)


def fine_tune(run: Plan, model: keras.Model):
  """Phase 2 of two_phase: the top --fine_tune_blocks blocks too, at the fine-tuning rate."""
  config = run.config
  with run.strategy.scope():
    trainable = model_lib.unfreeze_top_blocks(model, config.fine_tune_blocks)
    compile_phase(run, model, config.fine_tune_learning_rate, config.fine_tune_epochs)
  logging.info("Unfroze the top %d blocks: %d base layers", config.fine_tune_blocks, trainable)
  end = config.epochs + config.fine_tune_epochs
  checkpointed = [*run.callbacks, run.checkpoint]
  return fit_phase(
    run, "fine_tune", model, config.epochs, end, run.train, run.validation, checkpointed
  )


def fit_end_to_end(run: Plan, model: keras.Model):
  """The one phase of end_to_end: every layer, BatchNorm training, from the first epoch."""
  checkpointed = [*run.callbacks, run.checkpoint]
  return fit_phase(
    run, "end_to_end", model, 0, run.config.epochs, run.train, run.validation, checkpointed
  )


def save_model(model: keras.Model, path: str, keep_optimizer: bool = False) -> None:
  """Saves `model` as a .keras file; without the optimizer's state unless `keep_optimizer`.

  Every txr command loads it to predict, never to train on: the optimizer's
  slots (AdamW keeps two per weight) would triple the file for nothing.
  """
  if keep_optimizer or model.optimizer is None:
    model.save(path)
    return
  uncompiled = model.__class__.from_config(model.get_config())
  uncompiled.set_weights(model.get_weights())
  # Weights hold no random stream: the augmentation's goes across by hand.
  for copy, layer in zip(uncompiled.layers, model.layers, strict=True):
    if isinstance(layer, augmentation.Augment):
      copy.seed_generator.state.assign(layer.seed_generator.state)
  uncompiled.save(path)


def restore_best(model: keras.Model, checkpoint: BestCheckpoint) -> str:
  """Loads the best checkpoint's weights into `model`, if there are any.

  Args:
    model: the trained model.
    checkpoint: its run's best checkpoint.

  Returns:
    Which weights `model` now holds, for the log and the report.
  """
  if not checkpoint.record:  # Only the cached head phase ran, or no validation AUC was finite.
    return "last epoch (no validation AUC was checkpointed)"
  model.load_weights(checkpoint.path)
  best = checkpoint.record
  return f"best: epoch {best['epoch']}, val AUC {best['val_auc']:.4f}"
