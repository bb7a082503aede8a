"""Scoring a split: each score stays with its own image and comes from the served float32 model."""

import dataclasses
import subprocess
import sys

from conftest import REPO
import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from txr_model import evaluation
from txr_model import input_pipeline
from txr_model import model as model_lib
from txr_model import run_config


def _tiny_model(weights):
  """A random model whose scores differ from image to image: the mechanics tests' (TINY) base."""
  keras.utils.set_random_seed(0)
  model = model_lib.build_model(32, weights, mode="end_to_end", backbone="mobilenet_v3_small")
  head = model.get_layer(model_lib.CLASSIFIER)
  features = head.kernel.shape[0]
  head.set_weights([np.random.default_rng(0).normal(0, 0.05, (features, 1)), np.zeros(1)])
  return model


@pytest.fixture(scope="module")
def test_split(built_data_dir):
  return input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, 32, 4, split="test")


def test_a_reordered_read_never_pairs_a_score_with_another_images_label(
  test_split, tiny_base_weights, monkeypatch
):
  model = _tiny_model(tiny_base_weights)
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


def test_scores_and_features_are_the_served_float32_models(test_split, tiny_base_weights):
  """Thresholds and the OOD detector are fitted on these: the export serves in float32."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = _tiny_model(tiny_base_weights)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  served = model_lib.as_float32(model)
  assert served is not model
  images = np.concatenate([x for x, _ in input_pipeline.make_dataset(test_split)])
  # Called eagerly: predict would trace each of the four (a few seconds each).
  scores = served(images, training=False).numpy()[:, 0]
  features = model_lib.feature_extractor(served)(images, training=False).numpy()
  trained = model_lib.feature_extractor(model)(images, training=False).numpy()
  assert np.abs(trained - features).max() > 1e-3 * np.abs(features).max()  # bfloat16's differ
  # bfloat16's scores are 0.09 off here; float32's differ by batching alone (about 1e-6).
  assert np.abs(model(images, training=False).numpy()[:, 0] - scores).max() > 1e-2
  got = evaluation.outputs(model, test_split)
  np.testing.assert_allclose(got.scores, scores, atol=1e-5)
  np.testing.assert_allclose(got.features, features, rtol=1e-4, atol=1e-4)
  assert got.features.dtype == np.float32


def test_a_split_is_scored_in_one_trace_whatever_the_size_of_its_last_batch(
  test_split, tiny_base_weights, monkeypatch
):
  """Keras's predict_on_batch traced the scorer again for a split's smaller last batch."""
  from keras.src.models.functional import Functional
  import tensorflow as tf

  traced = set()  # the batch sizes the networks were traced for
  call = Functional.call

  def recorded(self, inputs, *args, **kwargs):
    if tf.inside_function():
      traced.add(tf.nest.flatten(inputs)[0].shape[0])
    return call(self, inputs, *args, **kwargs)

  monkeypatch.setattr(Functional, "call", recorded)
  model = _tiny_model(tiny_base_weights)
  got = evaluation.outputs(model, dataclasses.replace(test_split, global_batch_size=3))
  assert len(got.labels) % 3 and len(got.labels) > 3  # a full batch, then a smaller one
  assert len(traced) == 1, traced
  evaluation.outputs(model, dataclasses.replace(test_split, global_batch_size=5))
  assert len(traced) == 1, traced  # and not again for another batch size


def test_repeated_file_names_are_an_error_naming_the_file(
  test_split, tiny_base_weights, monkeypatch
):
  examples = input_pipeline.examples
  monkeypatch.setattr(
    input_pipeline, "examples", lambda config, split: examples(config, split).repeat(2)
  )
  with pytest.raises(
    ValueError, match=r"shenzhen_cxr/512 test: CHNCXR_\d+_\d\.png appears 2 times"
  ):
    evaluation.outputs(_tiny_model(tiny_base_weights), dataclasses.replace(test_split))


def test_evaluation_configs_read_each_split_once_plainly_in_batches_of_one_size(test_split):
  configs = evaluation.evaluation_configs(input_pipeline.run_splits(test_split))
  assert set(configs) == set(input_pipeline.SPLITS)
  for name, config in configs.items():
    assert config.split == name and config.global_batch_size == evaluation.BATCH_SIZE
    assert not (config.training or config.repeat or config.drop_remainder or config.cache)


BOTH = "shenzhen_cxr/512+montgomery_cxr/512"


def _trained_run(model_dir, data_dir, dataset=BOTH):
  """A run folder as txr-train leaves it (run_config.json, model.keras), with a random model."""
  model_dir.mkdir()
  trained = run_config.RunConfig(
    dataset=dataset, data_dir=data_dir, manual_dir=None, model_dir=str(model_dir),
    strategy="default", tpu="", num_gpus=-1, num_cpu_devices=1, image_size=32,
    age_bands="0-17,18-39,40-59,60+", backbone="mobilenet_v3_small",
    global_batch_size=8, mode="end_to_end", weights="none", init_from="", dropout=0.2, epochs=1,
    fine_tune_epochs=0, fine_tune_blocks=1, learning_rate=1e-3, fine_tune_learning_rate=1e-5,
    weight_decay=1e-3, warmup_epochs=1.0, early_stopping_patience=0, mixed_precision="float32",
    seed=0, folds=0, cache_features=False, cache_views=1, steps_per_execution=1,
  )  # fmt: skip
  trained.save(str(model_dir))
  return trained


def _evaluate(model_dir, *flags):
  return subprocess.run(
    [sys.executable, "-m", "txr_model.evaluate", f"--model_dir={model_dir}", *flags],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip


@pytest.mark.heavy
def test_evaluate_rejects_an_unknown_split_in_one_line_before_any_work(built_data_dir, tmp_path):
  model_dir = tmp_path / "model"
  _trained_run(model_dir, built_data_dir)
  (model_dir / "model.keras").write_bytes(b"")  # never loaded: the usage error comes first
  out = _evaluate(model_dir, "--split=bogus")
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert "error: --split=bogus: shenzhen_cxr/512: Unknown split 'bogus'" in last
  assert "Traceback" not in out.stderr and not (model_dir / "evaluation").exists()


@pytest.mark.heavy
def test_a_held_out_split_of_one_joined_dataset_is_not_called_training_images(
  built_data_dir, tiny_base_weights, tmp_path
):
  model_dir = tmp_path / "both"
  _trained_run(model_dir, built_data_dir)
  _tiny_model(tiny_base_weights).save(model_dir / "model.keras")
  out = _evaluate(model_dir, "--dataset=montgomery_cxr/512", "--split=test")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "montgomery_cxr/512 test (N=2)" in out.stderr
  assert "trained on" not in out.stderr
  out_dir = model_dir / "evaluation" / "montgomery_cxr_512_test"
  for name in ("metrics.json", "scores_test.csv", "roc.png", "reliability.png"):
    assert f"Wrote {out_dir / name}" in out.stderr and (out_dir / name).exists()


def test_reads_of_training_images_are_named(built_data_dir, tmp_path):
  trained = _trained_run(tmp_path / "both", built_data_dir)
  run = input_pipeline.run_splits(input_pipeline.InputConfig(BOTH, built_data_dir, 75, 32))

  def trained_on(dataset, split):
    evaluated = input_pipeline.InputConfig(dataset, built_data_dir, 75, 32, split=split)
    return input_pipeline.training_images_in(trained.dataset, trained.folds, run, evaluated)

  for split in ("test", "validation", "test+validation"):
    assert trained_on("montgomery_cxr/512", split) == []
  assert trained_on("montgomery_cxr/512", "all") == ["montgomery_cxr/512"]
  assert trained_on("montgomery_cxr/512", "train[:2]") == ["montgomery_cxr/512"]
  assert trained_on(BOTH, "all") == ["montgomery_cxr/512", "shenzhen_cxr/512"]
  assert input_pipeline.training_images_in(trained.dataset, trained.folds, run, run["test"]) == []
