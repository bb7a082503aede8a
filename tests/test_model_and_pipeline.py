"""The model (weights, freezing, BatchNorm) and the input pipeline, in process."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import model as model_lib

SIZE = 75


@pytest.fixture(scope="module")
def model():
  return model_lib.build_model(SIZE, "none")


def test_builds_at_75px_with_frozen_base(model):
  assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 1)
  assert not model_lib.base_of(model).trainable
  assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]  # the head only
  assert model.layers[-1].dtype_policy.name == "float32"


def test_builds_from_a_local_weights_file(tmp_path, model):
  path = str(tmp_path / "base.weights.h5")
  base = model_lib.base_of(model)
  base.save_weights(path)
  loaded = model_lib.base_of(model_lib.build_model(SIZE, path))
  for a, b in zip(base.weights, loaded.weights, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_missing_weights_file_is_named(tmp_path):
  missing = str(tmp_path / "nope.h5")
  with pytest.raises(FileNotFoundError, match=f"--weights={missing}: no such file"):
    model_lib.build_model(SIZE, missing)


def test_imagenet_offline_says_what_to_do(monkeypatch):
  def offline(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")

  monkeypatch.setattr(keras.utils, "get_file", offline)
  monkeypatch.setattr("keras.src.applications.inception_v3.file_utils.get_file", offline)
  with pytest.raises(RuntimeError, match="could not download .*--weights=/path/to/"):
    model_lib.build_model(SIZE, "imagenet")


def test_unfreeze_top_blocks_keeps_batchnorm_frozen():
  model = model_lib.build_model(SIZE, "none")
  base = model_lib.base_of(model)
  assert model_lib.unfreeze_top_blocks(model, 2) > 0
  names = [layer.name for layer in base.layers]
  cut = names.index("mixed8")
  assert not any(layer.trainable for layer in base.layers[: cut + 1])
  assert all(
    layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
    for layer in base.layers[cut + 1 :]
    if layer.weights
  )
  with pytest.raises(ValueError, match="fine_tune_blocks=12"):
    model_lib.unfreeze_top_blocks(model, 12)
  # A training step changes the unfrozen convolutions but not BatchNorm statistics.
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
  bn = [v for v in base.non_trainable_weights if "moving" in v.path]
  before = [v.numpy().copy() for v in bn]
  conv = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)][-1].kernel
  conv_before = conv.numpy().copy()
  x = np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
  model.train_on_batch(x, np.array([0, 1, 0, 1], "float32"))
  assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, bn, strict=True))
  assert not np.array_equal(conv_before, conv.numpy())


def _config(data_dir, **kw):
  return input_pipeline.InputConfig("shenzhen_cxr/512", data_dir, SIZE, 8, **kw)


def test_eval_pipeline_shapes_range_and_determinism(built_data_dir):
  ds = input_pipeline.make_dataset(_config(built_data_dir, split="validation"))
  batches = list(ds)
  assert sum(len(y) for _, y in batches) == 9  # no drop_remainder at evaluation
  x, y = batches[0]
  assert x.dtype == tf.float32 and x.shape[1:] == (SIZE, SIZE, 3) and y.dtype == tf.float32
  assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  np.testing.assert_array_equal(x[..., 0], x[..., 2])  # gray replicated to RGB
  again = next(iter(ds))[0]  # no augmentation at evaluation
  np.testing.assert_array_equal(x.numpy(), again.numpy())


def test_training_pipeline_is_static_and_augmented(built_data_dir):
  config = _config(built_data_dir, training=True, drop_remainder=True, repeat=True, cache=False)
  ds = input_pipeline.make_dataset(config)
  assert ds.element_spec[0].shape == (8, SIZE, SIZE, 3)
  plain = input_pipeline.make_dataset(_config(built_data_dir, seed=0))
  augmented = input_pipeline.make_dataset(
    _config(built_data_dir, training=True, drop_remainder=True, seed=0)
  )
  # Augmentation changes pixels of the same images; ordering aside, compare means per image.
  a = np.sort(next(iter(plain))[0].numpy().mean(axis=(1, 2, 3)))
  b = np.sort(next(iter(augmented))[0].numpy().mean(axis=(1, 2, 3)))
  assert not np.allclose(a, b)


def test_resize_pads_instead_of_stretching():
  tall = tf.fill([200, 100, 1], tf.constant(200, tf.uint8))
  out = input_pipeline.resize_to_square(tall, 100).numpy()[..., 0]
  assert out.shape == (100, 100)
  assert (out[:, 25:75] == 200).all() and (out[:, :24] == 0).all() and (out[:, 76:] == 0).all()


def test_batchnorm_calibration_gives_random_bases_usable_features(built_data_dir):
  model = model_lib.build_model(SIZE, "none")
  base = model_lib.base_of(model)
  x, _ = next(iter(input_pipeline.make_dataset(_config(built_data_dir))))
  pooled = keras.Sequential([base, keras.layers.GlobalAveragePooling2D()])
  before = pooled(x, training=False).numpy().std()
  model_lib.calibrate_batchnorm(model, x)
  after = pooled(x, training=False).numpy().std()
  assert before < 1e-2 < after  # vanishing features before, O(0.1-1) after
  assert not base.trainable and [w.name for w in model.trainable_weights] == ["kernel", "bias"]
  assert all(
    layer.momentum == 0.99
    for layer in base.layers
    if isinstance(layer, keras.layers.BatchNormalization)
  )
