"""The learning-rate schedule and the best checkpoint that survives a restart."""

import json

import keras
import numpy as np
import pytest

from txr_model import fitting


def test_schedule_warms_up_then_decays_to_zero():
  schedule = fitting.learning_rate_schedule(1e-3, steps_per_epoch=10, epochs=5, warmup_epochs=1)
  rates = [float(schedule(step)) for step in range(51)]
  assert rates[0] == 0.0 and rates[5] == pytest.approx(5e-4)
  assert rates[10] == pytest.approx(1e-3) and max(rates) == pytest.approx(1e-3)
  assert all(np.diff(rates[10:]) <= 0)  # never rises after the warm-up
  assert rates[50] == pytest.approx(0.0, abs=1e-9)
  flat = fitting.learning_rate_schedule(1e-3, steps_per_epoch=10, epochs=1, warmup_epochs=0)
  assert float(flat(0)) == pytest.approx(1e-3)


def _model():
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  return model


def test_best_checkpoint_keeps_its_best_score_across_a_restart(tmp_path):
  path = str(tmp_path / "best.weights.h5")
  model = _model()
  first = fitting.BestCheckpoint(path)
  first.set_model(model)
  first.on_epoch_end(0, {"val_auc": 0.8})
  saved = [w.copy() for w in model.get_weights()]
  assert json.loads((tmp_path / "best.weights.h5.json").read_text()) == {
    "val_auc": 0.8,
    "epoch": 1,
  }
  # A restarted process: a worse epoch must not overwrite the checkpoint.
  model.set_weights([w + 1 for w in saved])
  resumed = fitting.BestCheckpoint(path)
  resumed.set_model(model)
  assert resumed.best == 0.8
  resumed.on_epoch_end(3, {"val_auc": 0.7})
  model.load_weights(path)
  for a, b in zip(model.get_weights(), saved, strict=True):
    np.testing.assert_array_equal(a, b)
  resumed.on_epoch_end(4, {"val_auc": 0.9})
  assert resumed.record == {"val_auc": 0.9, "epoch": 5}


def test_a_record_without_its_weights_is_ignored(tmp_path):
  path = tmp_path / "best.weights.h5"
  (tmp_path / "best.weights.h5.json").write_text('{"val_auc": 0.99, "epoch": 2}')
  assert fitting.BestCheckpoint(str(path)).record == {}
