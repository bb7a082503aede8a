"""The geometry the builders, training and serving share: orient, shrink, pad-resize."""

import numpy as np
import pytest
import tensorflow as tf

from txr_data import geometry


def test_resize_pads_instead_of_stretching():
  tall = tf.fill([200, 100, 1], tf.constant(200, tf.uint8))
  out = geometry.resize_to_square(tall, 100).numpy()[..., 0]
  assert out.shape == (100, 100)
  assert (out[:, 25:75] == 200).all() and (out[:, :24] == 0).all() and (out[:, 76:] == 0).all()


@pytest.mark.parametrize(
  "shape", [(512, 400), (400, 512), (511, 333), (100, 700), (299, 299), (37, 1001), (75, 76)]
)
def test_resize_to_square_is_resize_with_pad_rounded(shape):
  """The pad-after-rounding resize gives exactly tf.image.resize_with_pad's pixels."""
  image = tf.cast(tf.random.stateless_uniform([*shape, 1], [3, sum(shape)], 0, 256), tf.uint8)
  expected = tf.image.resize_with_pad(tf.cast(image, tf.float32), 299, 299)
  expected = tf.cast(tf.clip_by_value(tf.round(expected), 0, 255), tf.uint8)
  np.testing.assert_array_equal(geometry.resize_to_square(image, 299), expected)


@pytest.mark.parametrize("shape,expected", [((1000, 750), (512, 384)), ((300, 1200), (128, 512))])
def test_shrink_keeps_the_aspect_and_averages_areas(shape, expected):
  image = np.random.default_rng(0).integers(0, 256, (*shape, 1), dtype=np.uint8)
  out = geometry.shrink(tf.constant(image), 512)
  assert out.dtype == tf.uint8 and out.shape == (*expected, 1)
  assert abs(float(np.mean(out)) - float(np.mean(image))) < 1.0


def test_shrink_leaves_a_small_image_unchanged():
  image = np.arange(300 * 200, dtype=np.uint32).reshape(300, 200, 1).astype(np.uint8)
  np.testing.assert_array_equal(geometry.shrink(tf.constant(image), 512), image)
  np.testing.assert_array_equal(geometry.shrink(tf.constant(image), 300), image)


def test_shrink_and_square_give_the_same_pixels_in_a_graph():
  """The serving graph runs them on images of unknown shape: the same pixels as eagerly."""
  image = np.random.default_rng(1).integers(0, 256, (700, 530, 1), dtype=np.uint8)
  spec = tf.TensorSpec([None, None, 1], tf.uint8)
  graph = tf.function(lambda x: geometry.resize_to_square(geometry.shrink(x, 512), 75), [spec])
  eager = geometry.resize_to_square(geometry.shrink(tf.constant(image), 512), 75)
  np.testing.assert_array_equal(graph(tf.constant(image)), eager)


@pytest.mark.parametrize(
  "orientation,upright",
  [(1, [[1, 2, 3], [4, 5, 6]]), (3, [[6, 5, 4], [3, 2, 1]]), (6, [[4, 1], [5, 2], [6, 3]]),
   (8, [[3, 6], [2, 5], [1, 4]]), (0, [[1, 2, 3], [4, 5, 6]])],
)  # fmt: skip
def test_orient_turns_a_film_upright(orientation, upright):
  stored = tf.constant([[1, 2, 3], [4, 5, 6]], tf.uint8)[..., None]
  np.testing.assert_array_equal(geometry.orient(stored, orientation)[..., 0], upright)
