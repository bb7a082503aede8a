"""The learning-rate schedule, the best checkpoint and backup that survive a restart, a phase."""

import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from txr_model import fitting
from txr_model import run_dir


def test_schedule_warms_up_then_decays_to_zero():
  schedule = fitting.learning_rate_schedule(1e-3, steps_per_epoch=10, epochs=5, warmup_epochs=1)
  rates = [float(schedule(step)) for step in range(51)]
  assert rates[0] == 0.0 and rates[5] == pytest.approx(5e-4)
  assert rates[10] == pytest.approx(1e-3) and max(rates) == pytest.approx(1e-3)
  assert all(np.diff(rates[10:]) <= 0)  # never rises after the warm-up
  assert rates[50] == pytest.approx(0.0, abs=1e-9)
  flat = fitting.learning_rate_schedule(1e-3, steps_per_epoch=10, epochs=1, warmup_epochs=0)
  assert float(flat(0)) == pytest.approx(1e-3)


_NO_STOP = types.SimpleNamespace(early_stopping_patience=0)


def _run(work_dir, config=_NO_STOP):
  """What fit_phase reads of a Plan."""
  return types.SimpleNamespace(
    work_dir=str(work_dir), steps=2, val_steps=None, config=config,
    strategy=tf.distribute.get_strategy(),
  )  # fmt: skip


INITIAL_KERNEL = 0.25  # every new model starts here: a restart from scratch shows as this value


def _model():
  kernel = keras.initializers.Constant(INITIAL_KERNEL)
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer=kernel)])
  model.compile("sgd", "mse")
  return model


def test_best_checkpoint_keeps_its_best_score_across_a_restart(tmp_path):
  path = str(tmp_path / "best.weights.h5")
  model = _model()
  first = fitting.BestCheckpoint(path)
  first.set_model(model)
  first.on_epoch_end(0, {"val_auc": 0.8, "val_bce": 0.5})
  saved = [w.copy() for w in model.get_weights()]
  assert json.loads((tmp_path / "best.weights.h5.json").read_text()) == {
    "val_auc": 0.8,
    "val_bce": 0.5,
    "epoch": 1,
  }
  # A restarted process: a worse epoch must not overwrite the checkpoint.
  model.set_weights([w + 1 for w in saved])
  resumed = fitting.BestCheckpoint(path)
  resumed.set_model(model)
  assert resumed.record["val_auc"] == 0.8
  resumed.on_epoch_end(3, {"val_auc": 0.7, "val_bce": 0.1})
  resumed.on_epoch_end(3, {"val_auc": 0.8, "val_bce": 0.6})  # a tie, but a higher loss
  model.load_weights(path)
  for a, b in zip(model.get_weights(), saved, strict=True):
    np.testing.assert_array_equal(a, b)
  resumed.on_epoch_end(4, {"val_auc": 0.9, "val_bce": 0.4})
  assert resumed.record == {"val_auc": 0.9, "val_bce": 0.4, "epoch": 5}


def test_a_validation_auc_tie_goes_to_the_lower_loss_even_after_a_restart(tmp_path):
  path = str(tmp_path / "best.weights.h5")
  model = _model()
  first = fitting.BestCheckpoint(path)
  first.set_model(model)
  first.on_epoch_end(1, {"val_auc": 1.0, "val_bce": 0.6})  # AUC saturates early...
  first.on_epoch_end(2, {"val_auc": 1.0, "val_bce": 0.3})  # ...while the loss still falls
  assert first.record["epoch"] == 3
  model.set_weights([w + 1 for w in model.get_weights()])
  resumed = fitting.BestCheckpoint(path)
  resumed.set_model(model)
  resumed.on_epoch_end(3, {"val_auc": 1.0, "val_bce": 0.2})
  assert resumed.record["epoch"] == 4
  restored = _model()
  restored.load_weights(path)
  for a, b in zip(restored.get_weights(), model.get_weights(), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_record_without_its_weights_is_ignored(tmp_path):
  path = tmp_path / "best.weights.h5"
  (tmp_path / "best.weights.h5.json").write_text('{"val_auc": 0.99, "epoch": 2}')
  assert fitting.BestCheckpoint(str(path)).record == {}


def _fixed_model():
  """P(TB) = sigmoid(x): predictions that training at learning rate 0 leaves alone."""
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid")])
  model.set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
  fitting.compile_for_training(model, 0.0, weight_decay=0.0, steps_per_execution=1)
  return model


def test_the_training_step_is_traced_once(monkeypatch):
  """A first trace that creates the optimizer's slots is traced again: 47 s -> 24 s (TINY)."""
  traces = []
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid")])
  train_step = type(model).train_step
  monkeypatch.setattr(
    type(model), "train_step", lambda self, data: traces.append(1) or train_step(self, data)
  )
  schedule = fitting.learning_rate_schedule(1e-3, 2, 2, 0.5)
  fitting.compile_for_training(model, schedule, weight_decay=1e-4, steps_per_execution=2)
  x, y = np.zeros((8, 1), "float32"), np.ones((8, 1), "float32")
  model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat(), epochs=2,
            steps_per_epoch=2, verbose=0)  # fmt: skip
  assert len(traces) == 1


def test_weight_zero_padding_does_not_count_in_the_validation_metrics():
  # Two abnormal (x = -0.5, 2) and two normal (x = -1, 1) images: AUC 3/4, accuracy 1/2.
  # Two weight-0 blanks (x = 0, label 0), if counted, give AUC 5/8 and accuracy 4/6.
  x = np.array([[-0.5], [2.0], [-1.0], [1.0], [0.0], [0.0]], "float32")
  y = np.array([1, 1, 0, 0, 0, 0], "float32")
  w = np.array([1, 1, 1, 1, 0, 0], "float32")
  model = _fixed_model()
  history = model.fit(
    x[:4], y[:4], validation_data=(x, y, w), batch_size=2, epochs=1, verbose=0
  ).history
  assert history["val_auc"][0] == pytest.approx(0.75, abs=1e-3)
  assert history["val_accuracy"][0] == pytest.approx(0.5)
  assert history["val_precision"][0] == pytest.approx(0.5)  # the blanks are not false positives
  # The loss over the four real images, whatever the blanks: Keras's val_loss divides by six.
  p = 1 / (1 + np.exp(-x[:4, 0]))
  real = float(np.mean(-(y[:4] * np.log(p) + (1 - y[:4]) * np.log(1 - p))))
  assert history["val_bce"][0] == pytest.approx(real, rel=1e-4)
  assert history["val_loss"][0] != pytest.approx(real, rel=1e-2)
  # Training data have no weights: their metrics are still computed, over every example.
  assert history["auc"][0] == pytest.approx(0.75, abs=1e-3) and history["accuracy"][0] == 0.5


@pytest.mark.parametrize(
  "requested, epoch_steps", [(1, 5), (2, 4), (3, 3), (4, 4), (5, 5), (6, 5), (9, 5)]
)
def test_every_epoch_and_validation_pass_runs_exactly_its_steps(requested, epoch_steps):
  # 40 training examples at batch 8: 5 steps, a prime, so 2 to 4 per execution round the
  # epoch down rather than run one step per execution; 9 validation examples: 2 padded steps.
  steps, val_steps, per_execution = fitting.plan_steps(40, 9, 8, requested, static=True)
  assert steps == epoch_steps and val_steps >= 2 and per_execution == min(requested, steps)
  assert steps % per_execution == 0 and val_steps % per_execution == 0
  model = _fixed_model()
  fitting.compile_for_training(model, 0.0, weight_decay=0.0, steps_per_execution=per_execution)
  passes = []  # per validation pass, the last step each execution reached
  train = tf.data.Dataset.from_tensors((np.zeros((8, 1), "float32"), np.zeros(8, "float32")))
  val = tf.data.Dataset.from_tensors((np.zeros((8, 1), "float32"), np.zeros(8), np.ones(8)))

  class Count(keras.callbacks.Callback):
    def on_test_begin(self, logs=None):
      passes.append([])

    def on_test_batch_end(self, batch, logs=None):
      passes[-1].append(batch)

  model.fit(
    train.repeat(), steps_per_epoch=steps, epochs=2, validation_data=val.repeat(),
    validation_steps=val_steps, callbacks=[Count()], verbose=0,
  )  # fmt: skip
  assert int(model.optimizer.iterations) == 2 * steps
  assert [p[-1] + 1 for p in passes] == [val_steps, val_steps]


class _Weights(keras.callbacks.Callback):
  """Records the first kernel value at the start of training and after each epoch."""

  def __init__(self):
    super().__init__()
    self.at_start, self.after = None, []

  def on_train_begin(self, logs=None):
    self.at_start = float(self.model.get_weights()[0][0, 0])

  def on_epoch_end(self, epoch, logs=None):
    self.after.append(float(self.model.get_weights()[0][0, 0]))


def _fit(backup_dir, epochs, *callbacks):
  model = _model()
  x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
  weights = _Weights()
  history = model.fit(
    x, y, epochs=epochs, callbacks=[fitting.Backup(str(backup_dir)), weights, *callbacks],
    verbose=0,
  )  # fmt: skip
  return len(history.epoch), weights


@pytest.mark.parametrize("older", [True, False])
def test_a_backup_cut_short_by_a_kill_resumes_from_the_last_good_state(tmp_path, older):
  _, first = _fit(tmp_path, 3)
  latest = tmp_path / "latest.weights.h5"
  if not older:  # Killed while the first epoch's backup was written.
    for path in tmp_path.glob("*.bkp"):
      path.unlink()
  latest.write_bytes(latest.read_bytes()[:100])  # as a kill -9 mid-save leaves it
  ran, resumed = _fit(tmp_path, 4)
  if older:  # From the backup of epoch 2: epochs 3 and 4 run.
    assert ran == 2 and resumed.at_start == first.after[1]
  else:  # Nothing good to resume from: the phase starts again.
    assert ran == 4 and resumed.at_start == INITIAL_KERNEL != first.after[0]
  _fit(tmp_path, 5)  # and the backup written since reads back


def test_a_phase_that_stopped_early_is_not_trained_again_after_a_restart(tmp_path):
  class StopAfterTwo(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      self.model.stop_training = epoch == 1

  ran, _ = _fit(tmp_path, 5, StopAfterTwo())
  assert ran == 2
  assert fitting.Backup(str(tmp_path)).final_epoch(5) == 2
  ran, _ = _fit(tmp_path, fitting.Backup(str(tmp_path)).final_epoch(5))
  assert ran == 0
  # A phase that ran all its epochs is continued by a rerun asking for more.
  other = tmp_path / "full"
  _fit(other, 2)
  assert fitting.Backup(str(other)).final_epoch(4) == 4 and _fit(other, 4)[0] == 2


def _head_phase_with_a_best_checkpoint(tmp_path):
  """Two epochs of a `head` phase on separable data, checkpointed: (model, checkpoint, history)."""
  run = _run(tmp_path)
  model = _fixed_model()
  x = np.array([[-1.0], [1.0], [-2.0], [2.0]], "float32")
  data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 0, 1], "float32"))).batch(2)
  checkpoint = fitting.BestCheckpoint(str(tmp_path / run_dir.BEST_WEIGHTS))
  train = lambda _: data.repeat()  # noqa: E731
  history = fitting.fit_phase(run, "head", model, 0, 2, train, data, [checkpoint])
  return model, checkpoint, history


def test_a_phase_is_backed_up_under_its_name_and_restore_best_loads_the_best(tmp_path):
  model, checkpoint, history = _head_phase_with_a_best_checkpoint(tmp_path)
  assert history.epoch == [0, 1] and checkpoint.record["epoch"] == 1  # AUC 1 from epoch 1
  assert (tmp_path / run_dir.BACKUP / "head" / "training_metadata.json").exists()
  best = [w.copy() for w in model.get_weights()]
  model.set_weights([w + 1 for w in best])
  assert fitting.restore_best(model, checkpoint) == "best: epoch 1, val AUC 1.0000"
  for a, b in zip(model.get_weights(), best, strict=True):
    np.testing.assert_array_equal(a, b)
  none = fitting.BestCheckpoint(str(tmp_path / "other.weights.h5"))
  assert fitting.restore_best(model, none) == "last epoch (no validation AUC was checkpointed)"


def test_a_kill_between_the_best_checkpoint_and_the_backup_never_loses_the_best_epoch(tmp_path):
  """Epoch 2 is the best; the run dies at its end: the restart must still compare it."""
  run = _run(tmp_path)
  x = np.array([[-1.0], [1.0], [-2.0], [2.0]], "float32")
  data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 0, 1], "float32"))).batch(2)
  path = str(tmp_path / run_dir.BEST_WEIGHTS)

  class Killed(Exception):
    pass

  class KillAtEndOfEpoch2(keras.callbacks.Callback):  # the kill lands in the first callback
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 1:
        raise Killed

  model = _fixed_model()
  with pytest.raises(Killed):
    callbacks = [KillAtEndOfEpoch2(), fitting.BestCheckpoint(path)]
    fitting.fit_phase(run, "head", model, 0, 3, lambda _: data.repeat(), data, callbacks)
  metadata = json.loads((tmp_path / run_dir.BACKUP / "head" / "training_metadata.json").read_text())
  assert metadata["epoch"] == 1  # epochs completed and backed up: epoch 2 runs again
  read = []  # the epochs the training data is made for: from the restored one (epoch_stream)
  train = lambda epochs: read.append(epochs) or data.repeat()  # noqa: E731
  history = fitting.fit_phase(
    run, "head", _fixed_model(), 0, 3, train, data, [fitting.BestCheckpoint(path)]
  )
  assert history.epoch == [1, 2] and read == [range(1, 3)]


def test_early_stopping_keeps_its_patience_count_across_a_restart(tmp_path):
  """Patience 2, best at epoch 2: a run stops after epoch 4, killed at 3 and restarted too."""
  x = np.array([[-1.0], [1.0], [-2.0], [2.0]], "float32")
  data = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 0, 1], "float32"))).batch(2)
  aucs = [0.5, 0.6, 0.55, 0.55, 0.55, 0.55, 0.55, 0.55]

  class Scripted(keras.callbacks.Callback):  # validation AUCs by epoch, whatever the model
    def on_epoch_end(self, epoch, logs=None):
      logs["val_auc"] = aucs[epoch]

  def run_phase(folder, epochs):
    config = types.SimpleNamespace(early_stopping_patience=2)
    run = _run(folder, config)
    model = _fixed_model()
    train = lambda _: data.repeat()  # noqa: E731
    return fitting.fit_phase(run, "p", model, 0, epochs, train, data, [Scripted()]).epoch

  assert run_phase(tmp_path / "whole", 8) == [0, 1, 2, 3]
  assert run_phase(tmp_path / "killed", 3) == [0, 1, 2]  # as if killed after epoch 3
  assert run_phase(tmp_path / "killed", 8) == [3]  # Keras alone ran epochs 4 and 5


@pytest.mark.parametrize("cut_after", ["save", "record", "weights_rename"])
def test_a_kill_during_the_best_checkpoints_save_leaves_weights_and_record_that_match(
  tmp_path, cut_after
):
  path = str(tmp_path / run_dir.BEST_WEIGHTS)
  model = _model()
  first = fitting.BestCheckpoint(path)
  first.set_model(model)
  first.on_epoch_end(0, {"val_auc": 0.7, "val_bce": 0.6})
  old_weights = (tmp_path / run_dir.BEST_WEIGHTS).read_bytes()
  model.set_weights([w + 1 for w in model.get_weights()])
  renames = []
  real_rename = tf.io.gfile.rename

  def rename(src, dst, overwrite=False):  # the kill lands after `cut_after`
    renames.append(src)
    if cut_after == "record" or (cut_after == "weights_rename" and len(renames) == 2):
      raise KeyboardInterrupt
    real_rename(src, dst, overwrite=overwrite)

  tf.io.gfile.rename = rename
  try:
    if cut_after == "save":  # killed right after the partial weights were written
      model.save_weights(first.partial, overwrite=True)
    else:
      with pytest.raises(KeyboardInterrupt):
        first.on_epoch_end(1, {"val_auc": 0.9, "val_bce": 0.3})
  finally:
    tf.io.gfile.rename = real_rename
  restarted = fitting.BestCheckpoint(path)
  new_weights = (tmp_path / run_dir.BEST_WEIGHTS).read_bytes() != old_weights
  assert restarted.record["epoch"] == (2 if new_weights else 1), (cut_after, restarted.record)
  assert new_weights == (cut_after == "weights_rename")


def test_a_phase_that_diverged_goes_on_from_the_best_epoch_or_stops_saying_why(tmp_path):
  """TerminateOnNaN stops a phase with NaN weights: fine-tuning must never start from them."""
  model, checkpoint, _ = _head_phase_with_a_best_checkpoint(tmp_path)
  best = [w.copy() for w in model.get_weights()]
  fitting.recover_from_divergence(model, checkpoint, "head")  # finite: nothing to do
  model.set_weights([np.full_like(w, np.nan) for w in best])
  fitting.recover_from_divergence(model, checkpoint, "head")
  for a, b in zip(model.get_weights(), best, strict=True):
    np.testing.assert_array_equal(a, b)
  model.set_weights([np.full_like(w, np.nan) for w in best])
  nothing = fitting.BestCheckpoint(str(tmp_path / "none.weights.h5"))
  with pytest.raises(FloatingPointError, match="lower --learning_rate"):
    fitting.recover_from_divergence(model, nothing, "head")


def test_train_model_fine_tunes_from_the_best_epoch_after_the_head_phase_diverged(
  tmp_path, monkeypatch
):
  """The wiring between the phases: without it, fine-tuning started from NaN weights.

  The phases themselves are replaced (the head leaves NaN weights, as TerminateOnNaN
  does; fine-tuning records what it starts from): what is checked is train_model's order.
  """
  model, checkpoint, _ = _head_phase_with_a_best_checkpoint(tmp_path)
  best = [w.copy() for w in model.get_weights()]
  config = types.SimpleNamespace(
    mode="two_phase", fine_tune_epochs=1, epochs=2, learning_rate=0.0, image_size=75,
    weights="imagenet", dropout=0.0, seed=0, backbone="inception_v3", init_from="",
  )  # fmt: skip
  monkeypatch.setattr(fitting, "plan", lambda *args: types.SimpleNamespace(checkpoint=checkpoint))
  monkeypatch.setattr(fitting.model_lib, "build_model", lambda *args, **kwargs: model)
  monkeypatch.setattr(fitting, "compile_phase", lambda *args: None)

  def diverged_head(run, m):
    m.set_weights([np.full_like(w, np.nan) for w in m.get_weights()])

  started_from = []
  monkeypatch.setattr(fitting, "fit_head", diverged_head)
  monkeypatch.setattr(
    fitting, "fine_tune", lambda run, m: started_from.append([w.copy() for w in m.get_weights()])
  )
  trained, _ = fitting.train_model(config, tf.distribute.get_strategy(), str(tmp_path), {})
  assert trained is model and len(started_from) == 1
  for a, b in zip(started_from[0], best, strict=True):
    np.testing.assert_array_equal(a, b)
