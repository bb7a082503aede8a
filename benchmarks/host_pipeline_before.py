"""txr's host pipeline before augmentation moved into the model (issue 18), for comparison.

B7 measures it against today's pipeline in one run, and the augmentation
tests check the in-model layer draws the same transforms as `augment` here.
"""

import keras
import tensorflow as tf

from txr_model import augmentation
from txr_model import decode


def model_input(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """The decode and pad-resize of then: each image's header checked, padded in float32."""
  image = tf.image.resize_with_pad(
    tf.cast(decode.stored_gray(encoded), tf.float32), image_size, image_size
  )
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The tf.data augmentation of then: Keras's warp (no XLA kernel) and photometric changes.

  Its random draws were moved unchanged into `augmentation.random_transforms`;
  what the model does differently is the warp (gathers instead of Keras's op).
  """
  shape = tf.shape(images)
  height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  transform, contrast, brightness = augmentation.random_transforms(seed, shape[0], height, width)
  images = keras.ops.image.affine_transform(images, transform, data_format="channels_last")
  contrast, brightness = contrast[:, None, None, None], brightness[:, None, None, None]
  mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
  images = (images - mean) * (1 + contrast) + mean + 255 * brightness
  return tf.clip_by_value(images, 0.0, 255.0)


def augment_batch(index: tf.Tensor, batch: tuple, seed: int = 0) -> tuple:
  """The map that augmented each (uint8 images, labels) batch, seeded by its index."""
  images, labels = batch
  images = augment(tf.cast(images, tf.float32), tf.stack([tf.constant(seed, tf.int64), index]))
  return tf.cast(tf.round(images), tf.uint8), labels
