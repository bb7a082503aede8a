"""The in-model augmentation: the host version's transforms, XLA, training only, per replica."""

import subprocess
import sys
import textwrap

from conftest import REPO
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import host_pipeline_before
from txr_model import augmentation


def _images(n=6, height=40, width=32, seed=0):
  """Textured images (a grid and noise), so any misplaced pixel shows."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  grid = 255.0 * (((y // 4) + (x // 4)) % 2)
  return tf.constant(
    grid[None, ..., None] * 0.7 + rng.uniform(0, 70, (n, height, width, 1)), "float32"
  )


@pytest.mark.parametrize("seed", [(0, 0), (7, 3), (123, 99)])
def test_same_augmentation_as_the_host_version(seed):
  images = _images()
  seed = tf.constant(seed, tf.int64)
  before = host_pipeline_before.augment(images, seed)  # the tf.data version this replaced
  np.testing.assert_allclose(augmentation.augment(images, seed), before, atol=1e-3)


def test_the_layers_stream_is_the_old_pipelines_batch_by_batch():
  """Step k of `Augment(seed)` in training is batch k of the old tf.data pipeline.

  The old pipeline seeded batch k with (seed, k) on a repeated dataset; the layer's
  stream advances once per training step. A change to the draws, their order, the
  warp or the stream fails here (issue 24's bisection rests on this equality).
  """
  images = _images()
  layer = augmentation.Augment(seed=11)
  for step in range(3):
    now = layer(tf.cast(images, tf.uint8), training=True)
    before = host_pipeline_before.augment(
      tf.cast(tf.cast(images, tf.uint8), tf.float32), tf.constant([11, step], tf.int64)
    )  # which the old pipeline rounded to uint8 before the model
    np.testing.assert_allclose(now.numpy(), np.round(before.numpy()), atol=1e-3)


def test_warp_matches_keras_affine_transform_for_any_affine_map():
  images = _images(n=4, height=33, width=50)
  rng = np.random.default_rng(1)
  transforms = np.zeros((4, 8), "float32")
  transforms[:, :6] = rng.normal([1, 0.3, 5, -0.2, 0.8, -7], 0.5, (4, 6))  # far beyond training's
  expected = keras.ops.image.affine_transform(images, transforms, data_format="channels_last")
  np.testing.assert_allclose(
    augmentation.warp(images, tf.constant(transforms)).numpy(), expected.numpy(), atol=1e-3
  )


def test_transform_ranges_and_no_flip():
  transforms, contrast, brightness = augmentation.random_transforms(
    tf.constant([5, 6], tf.int64), 4000, 299.0, 299.0
  )
  a0, a1, _, b0, b1 = (transforms[:, i].numpy() for i in range(5))
  assert (a0 * b1 - a1 * b0 > 0).all()  # a positive determinant: never mirrored
  angle = np.degrees(np.arctan2(b0, a0))
  zoom = 1 / np.hypot(a0, b0)
  assert np.abs(angle).max() <= 7.2 + 1e-3 and np.abs(angle).max() > 6.5
  assert 0.9 - 1e-6 <= zoom.min() < 0.91 and 1.09 < zoom.max() <= 1.1 + 1e-6
  for change in (contrast.numpy(), brightness.numpy()):
    assert -0.1 <= change.min() < -0.09 and 0.09 < change.max() <= 0.1


def test_compiles_under_xla_where_the_keras_warp_does_not():
  images = _images()
  layer = augmentation.Augment(seed=1)
  compiled = tf.function(lambda x: layer(x, training=True), jit_compile=True)
  out = compiled(tf.cast(images, tf.uint8))
  assert out.shape == images.shape and out.dtype == tf.float32
  # The check is real: XLA's CPU backend rejects the op behind Keras's warp, as a TPU does.
  identity = tf.constant([[1.0, 0, 0, 0, 1, 0, 0, 0]] * 6)
  keras_warp = tf.function(
    lambda x: keras.ops.image.affine_transform(x, identity, data_format="channels_last"),
    jit_compile=True,
  )
  with pytest.raises(tf.errors.InvalidArgumentError, match="ImageProjectiveTransformV3"):
    keras_warp(images)


def test_layer_augments_only_in_training_and_is_reproducible():
  images = tf.cast(_images(), tf.uint8)
  layer = augmentation.Augment(seed=3)
  for training in (None, False):
    out = layer(images, training=training)
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out.numpy(), images.numpy().astype("float32"))
  first, second = layer(images, training=True), layer(images, training=True)
  assert not np.allclose(first.numpy(), second.numpy())  # a new draw each step
  again = augmentation.Augment(seed=3)
  np.testing.assert_array_equal(again(images, training=True).numpy(), first.numpy())
  other = augmentation.Augment(seed=4)
  assert not np.allclose(other(images, training=True).numpy(), first.numpy())


def test_layer_survives_saving(tmp_path):
  inputs = keras.Input((16, 16, 1), dtype="uint8")
  model = keras.Model(inputs, augmentation.Augment(seed=9, name="augment")(inputs))
  model.save(tmp_path / "m.keras")
  loaded = keras.saving.load_model(tmp_path / "m.keras")
  assert loaded.get_layer("augment").get_config()["seed"] == 9


def test_the_random_stream_is_saved_with_the_weights_so_a_resumed_run_goes_on_with_it(tmp_path):
  """Keras saves weights only, and a SeedGenerator's state is none: a restart replayed step 0."""
  images = tf.cast(_images(), tf.uint8)

  def model():
    inputs = keras.Input(images.shape[1:], dtype="uint8")
    return keras.Model(inputs, augmentation.Augment(seed=5, name="augment")(inputs))

  ran = model()
  for _ in range(3):  # three training steps
    ran(images, training=True)
  ran.save_weights(tmp_path / "backup.weights.h5")  # what BackupAndRestore writes
  uninterrupted = ran(images, training=True).numpy()  # step 4
  resumed = model()
  resumed.load_weights(tmp_path / "backup.weights.h5")
  np.testing.assert_array_equal(resumed(images, training=True).numpy(), uninterrupted)
  # A file saved before the state was kept (the layer had no variables) still loads.
  stateless = model()
  layer = stateless.get_layer("augment")
  layer.save_own_variables, layer.load_own_variables = (lambda store: None,) * 2
  stateless.save_weights(tmp_path / "old.weights.h5")
  fresh = model()
  fresh.load_weights(tmp_path / "old.weights.h5")
  first_step = model()(images, training=True).numpy()
  np.testing.assert_array_equal(fresh(images, training=True).numpy(), first_step)


@pytest.mark.heavy
def test_each_replica_draws_its_own_augmentation():
  """Two logical CPUs under MirroredStrategy: the same images come out differently."""
  script = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from txr_model import augmentation
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
      layer = augmentation.Augment(seed=0)
    images = tf.cast(tf.random.stateless_uniform([2, 24, 24, 1], [1, 2], 0, 255), tf.uint8)
    step = tf.function(lambda: strategy.run(lambda: layer(images, training=True)))
    runs = [[t.numpy() for t in strategy.experimental_local_results(step())] for _ in range(2)]
    (a0, a1), (b0, b1) = runs
    print("replicas differ", not np.allclose(a0, a1))
    print("steps differ", not np.allclose(a0, b0))
    """
  )
  out = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "replicas differ True" in out.stdout and "steps differ True" in out.stdout
