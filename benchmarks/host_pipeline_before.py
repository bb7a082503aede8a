"""txr's host pipeline before augmentation moved into the model (issue 18), for comparison.

B7 measures it against today's pipeline in one run, and the augmentation
tests check the in-model layer draws the same transforms as `augment` here.
"""

import math

import keras
import tensorflow as tf

from txr_model import decode


def model_input(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """The decode and pad-resize of then: each image's header checked, padded in float32."""
  image = tf.image.resize_with_pad(
    tf.cast(decode.stored_gray(encoded), tf.float32), image_size, image_size
  )
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The tf.data augmentation of then, as release cebfc12 wrote it (random draws included).

  Kept verbatim, not calling `augmentation`, so that the tests compare the
  in-model layer's draws and warp with an independent copy of the old ones.
  """
  batch = tf.shape(images)[0]
  height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 5)

  def uniform(i, shape, bound, center=0.0):
    return tf.random.stateless_uniform(shape, seeds[i], center - bound, center + bound)

  angle = uniform(0, [batch], 0.02 * 2 * math.pi)
  zoom = uniform(1, [batch], 0.1, center=1.0)
  shift_x, shift_y = uniform(2, [batch], 0.05) * width, uniform(3, [batch], 0.05) * height
  cx, cy = (width - 1) / 2, (height - 1) / 2
  a0, a1 = tf.cos(angle) / zoom, -tf.sin(angle) / zoom
  b0, b1 = tf.sin(angle) / zoom, tf.cos(angle) / zoom
  a2 = cx - a0 * cx - a1 * cy - shift_x
  b2 = cy - b0 * cx - b1 * cy - shift_y
  zeros = tf.zeros([batch])
  transform = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  images = keras.ops.image.affine_transform(images, transform, data_format="channels_last")
  photometric = tf.random.stateless_uniform([2, batch, 1, 1, 1], seeds[4], -0.1, 0.1)
  mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
  images = (images - mean) * (1 + photometric[0]) + mean + 255 * photometric[1]
  return tf.clip_by_value(images, 0.0, 255.0)


def augment_batch(index: tf.Tensor, batch: tuple, seed: int = 0) -> tuple:
  """The map that augmented each (uint8 images, labels) batch, seeded by its index."""
  images, labels = batch
  images = augment(tf.cast(images, tf.float32), tf.stack([tf.constant(seed, tf.int64), index]))
  return tf.cast(tf.round(images), tf.uint8), labels
