"""The image geometry that the builders, training and serving share: orient, shrink, square.

A stored image is oriented upright and area-shrunk to the builder config's
`max_side` (the builder, and the serving graph for a served image); the model
then sees it pad-resized to a square (the input pipeline and the serving
graph). Each step is one TensorFlow function here, used by all of them, so a
served image gets exactly the pixels a training image got. They work in
graphs as well as eagerly. Only TensorFlow: serving imports no tf.data or
TFDS code for them.
"""

import tensorflow as tf


def orient(image: tf.Tensor, orientation) -> tf.Tensor:
  """Applies an EXIF orientation (1-8) to an [h, w, c] image, so it displays upright.

  Args:
    image: the decoded image.
    orientation: the EXIF Orientation value (int or tensor); 1 (or anything
      else) leaves it.

  Returns:
    The upright image.
  """
  transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
  branches = [
    lambda: image,
    lambda: image,  # 1: upright
    lambda: tf.image.flip_left_right(image),  # 2: mirrored
    lambda: tf.image.rot90(image, 2),  # 3: upside down
    lambda: tf.image.flip_up_down(image),  # 4
    lambda: transpose(image),  # 5
    lambda: tf.image.rot90(image, 3),  # 6: stored rotated 90 degrees anticlockwise
    lambda: tf.image.rot90(transpose(image), 2),  # 7
    lambda: tf.image.rot90(image, 1),  # 8: stored rotated 90 degrees clockwise
  ]
  return tf.switch_case(tf.clip_by_value(orientation, 0, 8), branches)


def shrink(image: tf.Tensor, max_side) -> tf.Tensor:
  """Area-resizes a uint8 [h, w, c] image so its longest side is at most `max_side`.

  Aspect is kept; a smaller image is returned unchanged. The builders store
  their `max_side` configs with this, and the serving graph shrinks served
  images with it to the training dataset's `max_side`.
  """
  shape = tf.cast(tf.shape(image)[:2], tf.float64)
  scale = tf.cast(max_side, tf.float64) / tf.reduce_max(shape)
  size = tf.cast(tf.maximum(tf.round(shape * scale), 1.0), tf.int32)

  def resized():
    out = tf.image.resize(image, size, method="area")
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.cond(scale < 1.0, resized, lambda: image)


def resize_to_square(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [h, w, 1] -> uint8 [size, size, 1], aspect kept (zero padded, not stretched).

  The model's input geometry: the input pipeline and the serving graph both
  resize with this, after the builder's `shrink`.
  """
  # tf.image.resize_with_pad's geometry, with the padding done in uint8 after
  # rounding instead of in float32 before: the same pixels, at half the cost.
  height, width = (tf.cast(tf.shape(image)[i], tf.float32) for i in (0, 1))
  ratio = tf.maximum(width / image_size, height / image_size)
  resized_height, resized_width = height / ratio, width / ratio
  image = tf.image.resize(
    image, [tf.cast(tf.floor(resized_height), tf.int32), tf.cast(tf.floor(resized_width), tf.int32)]
  )
  image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  top = tf.maximum(0, tf.cast((image_size - resized_height) / 2, tf.int32))
  left = tf.maximum(0, tf.cast((image_size - resized_width) / 2, tf.int32))
  return tf.image.pad_to_bounding_box(image, top, left, image_size, image_size)
