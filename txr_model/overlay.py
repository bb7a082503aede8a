"""Grad-CAM overlays: a heat map blended over the image the model saw. TensorFlow only.

Shared by the training run's TensorBoard images (finish.py) and txr-predict,
which must run where only TensorFlow is installed.
"""

import tensorflow as tf


def overlay(image_bytes, heatmap, alpha: float = 0.4) -> tf.Tensor:
  """Blends a jet-coloured heat map over the pad-resized image.

  Args:
    image_bytes: the encoded PNG/JPEG the heat map was computed for.
    heatmap: [size, size] floats in [0, 1], from the export's `explain` signature.
    alpha: the heat map's weight.

  Returns:
    A uint8 RGB [size, size, 3] tensor.
  """
  size = heatmap.shape[0]
  gray = tf.io.decode_image(image_bytes, channels=1, expand_animations=False, dtype=tf.uint8)
  gray = tf.image.resize_with_pad(tf.cast(gray, tf.float32), size, size) / 255.0
  h = tf.clip_by_value(tf.cast(heatmap, tf.float32), 0.0, 1.0)[..., None]
  jet = tf.clip_by_value(1.5 - tf.abs(4.0 * h - tf.constant([3.0, 2.0, 1.0])), 0.0, 1.0)
  blended = (1 - alpha) * tf.image.grayscale_to_rgb(gray) + alpha * jet
  return tf.cast(tf.round(255 * blended), tf.uint8)
