"""The model (weights, freezing, BatchNorm) and the input pipeline, in process."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import model as model_lib

SIZE = 75


@pytest.fixture(scope="module")
def model(base_weights):
  return model_lib.build_model(SIZE, base_weights)


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


def test_two_phase_refuses_random_weights_and_modes_are_checked():
  with pytest.raises(ValueError, match="two_phase needs pretrained --weights"):
    model_lib.build_model(SIZE, "none", mode="two_phase")
  with pytest.raises(ValueError, match="--mode='warp'"):
    model_lib.build_model(SIZE, "none", mode="warp")


def _batchnorms(model):
  base = model_lib.base_of(model)
  return [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_end_to_end_trains_everything_with_batchnorm_in_training_mode():
  model = model_lib.build_model(SIZE, "none", mode="end_to_end")
  base = model_lib.base_of(model)
  assert base.trainable and all(layer.trainable for layer in base.layers)
  assert {layer.momentum for layer in _batchnorms(model)} == {0.9}
  x = np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
  # Training mode reaches the nested base: batch statistics, not the moving ones.
  pooled = keras.Model(model.input, model.get_layer("pool").output)
  assert not np.allclose(pooled(x, training=True), pooled(x, training=False))


def test_the_head_starts_at_one_half_on_any_features(model, built_data_dir):
  """First loss log 2, whatever the features' scale: the classifier's kernel starts at zero."""
  scratch = model_lib.build_model(SIZE, "none", mode="end_to_end")
  x, y = next(iter(input_pipeline.make_dataset(_config(built_data_dir, split="test"))))
  for m in (model, scratch):
    pooled = keras.Model(m.input, m.get_layer("pool").output)(x, training=False).numpy()
    assert np.isfinite(pooled).all()
    p = m(x, training=False).numpy()
    np.testing.assert_allclose(p, 0.5)
    loss = keras.losses.BinaryCrossentropy()(y[:, None], p)
    np.testing.assert_allclose(float(loss), np.log(2), rtol=1e-5)


def test_unfrozen_top_blocks_keep_batchnorm_frozen(base_weights):
  model = model_lib.build_model(SIZE, base_weights)
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
  # Keras 3 passes an outer training=True down to the base: BatchNorm ignores it
  # only because its layers are non-trainable, so both modes give the same output.
  x = np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
  np.testing.assert_allclose(
    base(x, training=True).numpy(), base(x, training=False).numpy(), rtol=1e-5, atol=1e-5
  )
  # Training changes the unfrozen convolutions but not BatchNorm statistics (two
  # steps: the first only moves the zero-initialised classifier).
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
  bn = [v for v in base.non_trainable_weights if "moving" in v.path]
  before = [v.numpy().copy() for v in bn]
  conv = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)][-1].kernel
  conv_before = conv.numpy().copy()
  for _ in range(2):
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


def test_static_validation_pads_with_weight_zero_and_counts_each_image_once(built_data_dir):
  # 9 validation images, global batch 8: 2 steps of 8, padded with 7 blanks.
  ds = input_pipeline.make_dataset(_config(built_data_dir, split="validation", pad_to_steps=2))
  batches = list(ds)
  assert [b[0].shape[0] for b in batches] == [8, 8]
  weights = np.concatenate([w.numpy() for _, _, w in batches])
  assert weights.sum() == 9 and set(weights) == {0.0, 1.0}


def test_pad_and_shard_gives_every_pipeline_the_same_steps():
  ds = tf.data.Dataset.from_tensor_slices((np.arange(10, dtype="float32"), np.ones(10, "float32")))
  shards = []
  for i in range(2):
    context = tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
    )
    shards.append(list(input_pipeline.pad_and_shard(ds, 2, 8, context).as_numpy_iterator()))
  assert [len(s) for s in shards] == [8, 8]  # 2 steps x 4 examples per pipeline each
  real = sorted(x for s in shards for x, _, w in s if w == 1.0)
  assert real == list(range(10))  # every example once, none twice
