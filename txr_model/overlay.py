"""Grad-CAM overlays: a heat map blended over the image the model saw. TensorFlow only.

Shared by the training run's TensorBoard images (finish.py) and txr-predict,
which must run where only TensorFlow is installed.
"""

import tensorflow as tf


def overlay(image, heatmap, alpha: float = 0.4) -> tf.Tensor:
  """Blends a jet-coloured heat map over the image the model saw.

  Args:
    image: uint8 [size, size, 1], the `image` output of the export's `explain`
      signature (decoded, oriented and pad-resized exactly as the model saw it).
    heatmap: [size, size] floats in [0, 1], from the same signature.
    alpha: the heat map's weight.

  Returns:
    A uint8 RGB [size, size, 3] tensor.
  """
  gray = tf.cast(image, tf.float32) / 255.0
  h = tf.clip_by_value(tf.cast(heatmap, tf.float32), 0.0, 1.0)[..., None]
  jet = tf.clip_by_value(1.5 - tf.abs(4.0 * h - tf.constant([3.0, 2.0, 1.0])), 0.0, 1.0)
  blended = (1 - alpha) * tf.image.grayscale_to_rgb(gray) + alpha * jet
  return tf.cast(tf.round(255 * blended), tf.uint8)
