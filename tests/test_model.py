"""The model: weights, modes, freezing, BatchNorm, the head's start and preprocessing."""

import os

import keras
import numpy as np
import pytest

from txr_model import augmentation
from txr_model import choices
from txr_model import input_pipeline
from txr_model import model as model_lib

SIZE = 75


@pytest.fixture(scope="module")
def model(base_weights):
  return model_lib.build_model(SIZE, base_weights)


def test_builds_at_75px_with_frozen_base(model):
  assert model.input_shape == (None, SIZE, SIZE, 1) and model.output_shape == (None, 1)
  assert model.input.dtype == "uint8"
  assert not model_lib.base_of(model).trainable
  assert [w.name for w in model.trainable_weights] == ["kernel", "bias"]  # the head only
  assert model.layers[-1].dtype_policy.name == "float32"
  # The augmentation is the model's first layer: it runs in the training step only.
  assert isinstance(model.layers[1], augmentation.Augment) and model.layers[1].name == "augment"


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
  x = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 1)).astype("uint8")
  # Training mode reaches the nested base: batch statistics, not the moving ones.
  pooled = model_lib.feature_extractor(model)
  assert not np.allclose(pooled(x, training=True), pooled(x, training=False))


def test_the_head_starts_at_one_half_on_any_features(model, built_data_dir):
  """First loss log 2, whatever the features' scale: the classifier's kernel starts at zero."""
  scratch = model_lib.build_model(SIZE, "none", mode="end_to_end")
  config = input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, SIZE, 8, split="test")
  x, y = next(iter(input_pipeline.make_dataset(config)))
  for m in (model, scratch):
    pooled = model_lib.feature_extractor(m)(x, training=False).numpy()
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
  x = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 1)).astype("uint8")
  maps = model_lib.feature_maps(model)
  np.testing.assert_allclose(
    maps(x, training=True).numpy(), maps(x, training=False).numpy(), rtol=1e-5, atol=1e-5
  )
  # Training changes the unfrozen convolutions but not BatchNorm statistics (two
  # steps: the first only moves the zero-initialised classifier).
  # Eagerly: two steps do not repay the training step's trace (about 8 s).
  model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy", run_eagerly=True)
  bn = [v for v in base.non_trainable_weights if "moving" in v.path]
  before = [v.numpy().copy() for v in bn]
  conv = [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)][-1].kernel
  conv_before = conv.numpy().copy()
  for _ in range(2):
    model.train_on_batch(x, np.array([0, 1, 0, 1], "float32"))
  assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, bn, strict=True))
  assert not np.array_equal(conv_before, conv.numpy())


def test_the_model_scales_uint8_gray_to_rgb_in_minus_one_to_one(model):
  """InceptionV3's preprocessing lives in the model: 0 -> -1, 255 -> 1, gray copied to RGB."""
  rgb = keras.Model(model.input, model.get_layer(model_lib.TO_RGB).output)
  x = np.broadcast_to(np.array([0, 51, 255], "uint8")[:, None, None, None], (3, SIZE, SIZE, 1))
  out = rgb(x).numpy()
  assert out.shape == (3, SIZE, SIZE, 3)
  np.testing.assert_allclose(out[:, 0, 0, :], [[-1.0] * 3, [-0.6] * 3, [1.0] * 3], atol=1e-6)


def test_as_float32_serves_a_mixed_precision_model_in_float32(model):
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    mixed = model_lib.build_model(75, "none", mode="end_to_end")
  finally:
    keras.mixed_precision.set_global_policy("float32")
  mixed.set_weights(model.get_weights())
  served = model_lib.as_float32(mixed)
  assert {layer.compute_dtype for layer in model_lib.base_of(served).layers} == {"float32"}
  assert served.get_layer(model_lib.SCALE).compute_dtype == "float32"
  assert model_lib.as_float32(model) is model  # Already float32: nothing to do.
  image = np.random.default_rng(0).integers(0, 256, (1, 75, 75, 1), dtype=np.uint8)
  np.testing.assert_allclose(served(image), model(image), atol=1e-5)


@pytest.mark.parametrize(
  "backbone, blocks", [("densenet121", 5), ("mobilenet_v3_small", 11), ("inception_v3", 11)]
)
def test_each_backbone_has_its_blocks_and_fine_tunes_the_top_one(backbone, blocks):
  size = choices.BACKBONES[backbone].min_size
  model = model_lib.build_model(size, "none", mode="end_to_end", backbone=backbone)
  base = model_lib.base_of(model)
  ends = model_lib.block_ends(base)
  assert len(ends) == blocks == choices.BACKBONES[backbone].blocks
  names = [layer.name for layer in base.layers]
  assert ends[-1] == names[-1] and sorted(ends, key=names.index) == ends  # in order, to the top
  assert model_lib.unfreeze_top_blocks(model, 1) > 0
  top = names.index(ends[-2]) + 1
  assert not any(layer.trainable for layer in base.layers[:top])
  assert any(layer.trainable for layer in base.layers[top:])
  assert not any(
    layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
  )
  with pytest.raises(ValueError, match=f"expected 1 to {blocks}"):
    model_lib.unfreeze_top_blocks(model, blocks + 1)
  x = np.zeros((1, size, size, 1), np.uint8)
  assert model_lib.feature_maps(model)(x).shape[-1] == model.get_layer("pool").output.shape[-1]
  with pytest.raises(ValueError, match=f"{backbone} needs {size} or more"):
    model_lib.build_model(size - 1, "none", mode="end_to_end", backbone=backbone)


def test_each_backbone_gets_its_own_input_scaling():
  """keras.applications' preprocess_input for each, inside the model, from uint8 gray."""
  x = np.broadcast_to(np.array([0, 51, 255], "uint8")[:, None, None, None], (3, 32, 32, 1))
  for backbone in ("densenet121", "mobilenet_v3_small"):
    model = model_lib.build_model(32, "none", mode="end_to_end", backbone=backbone)
    base = model_lib.base_of(model)
    fed = keras.Model(model.input, model.get_layer(index=model.layers.index(base) - 1).output)
    rgb = np.repeat(x.astype("float32"), 3, axis=-1)
    mode = "torch" if backbone == "densenet121" else "tf"
    expected = keras.applications.imagenet_utils.preprocess_input(rgb, mode=mode)
    np.testing.assert_allclose(fed(x).numpy(), expected, atol=1e-4)


def test_init_from_starts_every_layer_from_a_finished_runs_model(tmp_path):
  """--init_from: base and head from the parent, even in two_phase without --weights."""
  keras.utils.set_random_seed(1)
  parent = model_lib.build_model(32, "none", mode="end_to_end", backbone="mobilenet_v3_small")
  head = parent.get_layer(model_lib.CLASSIFIER)
  head.kernel.assign(np.full(head.kernel.shape, 0.25, np.float32))  # A fresh head's is 0.
  path = os.fspath(tmp_path / "model.keras")
  parent.save(path)
  child = model_lib.build_model(
    32, "none", mode="two_phase", backbone="mobilenet_v3_small", init_from=path
  )
  for mine, theirs in zip(child.weights, parent.weights, strict=True):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
  with pytest.raises(ValueError):  # Another backbone's weights do not fit.
    model_lib.build_model(75, "none", mode="end_to_end", init_from=path)
