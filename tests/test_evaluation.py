"""Scoring a split: each score stays with its own image and comes from the served float32 model."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from txr_model import evaluation
from txr_model import input_pipeline
from txr_model import model as model_lib


def _tiny_model():
  """A random 75 px model whose scores differ from image to image."""
  keras.utils.set_random_seed(0)
  model = model_lib.build_model(75, "none", mode="end_to_end")
  head = model.get_layer(model_lib.CLASSIFIER)
  head.set_weights([np.random.default_rng(0).normal(0, 0.05, (2048, 1)), np.zeros(1)])
  return model


@pytest.fixture(scope="module")
def test_split(built_data_dir):
  return input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, 75, 4, split="test")


def test_a_reordered_read_never_pairs_a_score_with_another_images_label(test_split, monkeypatch):
  model = _tiny_model()
  truth = {
    ex["image/filename"].decode(): int(ex["label"])
    for ex in tfds.load(
      "shenzhen_cxr/512", split="test", data_dir=test_split.data_dir
    ).as_numpy_iterator()
  }
  plain = evaluation.outputs(model, test_split)
  score_of = dict(zip(plain.filenames, plain.scores, strict=True))
  assert len(set(plain.scores)) == len(plain.scores)  # each image has its own score
  examples, calls = input_pipeline.examples, []

  def read_in_another_order(config, split):  # Each read of the split in a new order.
    calls.append(split)
    return examples(config, split).shuffle(64, seed=len(calls))

  monkeypatch.setattr(input_pipeline, "examples", read_in_another_order)
  shuffled = evaluation.outputs(model, test_split)
  assert sorted(shuffled.filenames) == sorted(truth)
  for name, label, score in zip(shuffled.filenames, shuffled.labels, shuffled.scores, strict=True):
    assert label == truth[name]
    assert score == pytest.approx(score_of[name], abs=1e-6)


def test_scores_and_features_are_the_served_float32_models(test_split):
  """Thresholds and the OOD detector are fitted on these: the export serves in float32."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = _tiny_model()
  finally:
    keras.mixed_precision.set_global_policy("float32")
  served = model_lib.as_float32(model)
  assert served is not model
  images = np.concatenate([x for x, _ in input_pipeline.make_dataset(test_split)])
  scores = served.predict(images, verbose=0)[:, 0]
  features = model_lib.feature_extractor(served).predict(images, verbose=0)
  trained = model_lib.feature_extractor(model).predict(images, verbose=0)
  assert np.abs(trained - features).max() > 1e-3 * np.abs(features).max()  # bfloat16's differ
  assert np.abs(model.predict(images, verbose=0)[:, 0] - scores).max() > 5e-6
  got = evaluation.outputs(model, test_split)
  np.testing.assert_allclose(got.scores, scores, atol=1e-6)
  np.testing.assert_allclose(got.features, features, rtol=1e-5, atol=1e-5)
  assert got.features.dtype == np.float32


def test_repeated_file_names_are_an_error_naming_the_file(test_split, monkeypatch):
  examples = input_pipeline.examples
  monkeypatch.setattr(
    input_pipeline, "examples", lambda config, split: examples(config, split).repeat(2)
  )
  with pytest.raises(
    ValueError, match=r"shenzhen_cxr/512 test: CHNCXR_\d+_\d\.png appears 2 times"
  ):
    evaluation.outputs(_tiny_model(), dataclasses.replace(test_split))
