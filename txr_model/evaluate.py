"""Clinical evaluation of a trained model on a split of a built dataset.

Thresholds are chosen on the validation split and only applied to the
evaluated split, so the reported sensitivity and specificity are honest.
"""

import json
import math

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import metrics


def predict_split(model: keras.Model, config: input_pipeline.InputConfig):
  """(labels, scores) of one split, in dataset order, on one device."""
  ds = input_pipeline.make_dataset(config)
  labels = np.concatenate([y.numpy() for _, y in ds]).astype(int)
  scores = model.predict(ds.map(lambda x, y: x), verbose=0)[:, 0].astype(float)
  return labels, scores


def _finite(value):
  """JSON has no NaN: write it as null."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def write_json(path: str, value) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(_finite(value), f, indent=2, sort_keys=True)


def evaluate_model(
  model: keras.Model, base: input_pipeline.InputConfig, split: str = "test", seed: int = 0
) -> dict:
  """Metrics of `split`, with operating points chosen on `validation`."""
  val = predict_split(model, _replace(base, split="validation"))
  ev = predict_split(model, _replace(base, split=split))
  report = metrics.summarize(*val, *ev, seed=seed)
  report["split"] = split
  logging.info(
    "%s AUC %.3f (95%% CI %.3f-%.3f), validation AUC %.3f",
    split,
    report["auc"],
    *report["auc_ci95"],
    report["validation_auc"],
  )
  return report


def _replace(config, **changes):
  import dataclasses

  return dataclasses.replace(config, training=False, repeat=False, drop_remainder=False, **changes)
