"""Bottleneck caching: computed once, keyed so that stale features are never reused."""

import dataclasses

import keras
import numpy as np
import pytest

from txr_model import feature_cache
from txr_model import input_pipeline
from txr_model import model as model_lib


@pytest.fixture
def config(built_data_dir):
  return input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, 32, 8, split="train")


def test_features_are_computed_once_then_read(config, tmp_path, monkeypatch):
  # The mechanics tests' backbone at its smallest size (TINY): caching does not depend on it.
  model = model_lib.build_model(32, "none", mode="end_to_end", backbone="mobilenet_v3_small")
  first = list(feature_cache.cached_features(model, config, "none", 2, str(tmp_path)))
  assert len(first) == 2 * 45 and first[0][0].shape == (576,)

  def no_recompute(*args, **kwargs):
    raise AssertionError("features were recomputed")

  monkeypatch.setattr(input_pipeline, "make_dataset", no_recompute)
  again = list(feature_cache.cached_features(model, config, "none", 2, str(tmp_path)))
  np.testing.assert_array_equal(np.stack([f for f, _ in first]), np.stack([f for f, _ in again]))
  labels = np.array([y for _, y in first])
  assert set(labels) == {0.0, 1.0}


def test_key_covers_what_the_features_depend_on(config, tmp_path):
  base = feature_cache.cache_key(config, "none", 4)
  weights = tmp_path / "w.weights.h5"
  weights.write_bytes(b"pretend weights")
  changed = [
    feature_cache.cache_key(dataclasses.replace(config, image_size=99), "none", 4),
    feature_cache.cache_key(config, "imagenet", 4),
    feature_cache.cache_key(config, str(weights), 4),
    feature_cache.cache_key(config, "none", 2),
    feature_cache.cache_key(dataclasses.replace(config, split="validation"), "none", 4),
    feature_cache.cache_key(dataclasses.replace(config, folds=(1, 2)), "none", 4),
    feature_cache.cache_key(dataclasses.replace(config, seed=1), "none", 4),
  ]
  assert all(key != base for key in changed)
  weights.write_bytes(b"other weights, same name")
  assert feature_cache.cache_key(config, str(weights), 4) != changed[2]
  assert feature_cache.cache_key(config, "none", 4) == base
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:  # features computed in float16 are not reused by a float32 run
    assert feature_cache.cache_key(config, "none", 4) != base
  finally:
    keras.mixed_precision.set_global_policy("float32")
