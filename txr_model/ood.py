"""Out-of-distribution detection: is this input a chest X-ray like the training set?

A Mahalanobis distance on the pooled backbone features, fitted on the
training images with a threshold from the validation images, plus four cheap
input checks (colourfulness, aspect ratio, polarity and smoothness). All of it
runs inside the exported graph, so the serving signature and txr-predict report
the same flag; txr-predict-lite computes the same from the same rules.
"""

import numpy as np
import tensorflow as tf

from txr_lite import image_rules
from txr_lite import lite_model

# The cheap checks' settings as both exporters write them into the metadata (contract.Metadata).
RULES = {
  "max_colourfulness": image_rules.MAX_COLOURFULNESS,
  "aspect_range": tuple(image_rules.ASPECT_RANGE),
  "min_polarity": image_rules.MIN_POLARITY,
  "min_smoothness": image_rules.MIN_SMOOTHNESS,
}
QUANTILE = 0.99


# Cross-fitting folds for the training images' out-of-sample distances: each fit
# leaves out 5%, so its distances are close to the full detector's (with 5 folds,
# 20% out, the threshold was so high that 0-0.1% of new films were flagged).
FOLDS = 20


def _fit(x: np.ndarray, shrinkage: float) -> dict:
  """Mean and shrunk precision of feature rows `x` (float64)."""
  mean = x.mean(axis=0)
  cov = np.cov(x - mean, rowvar=False)
  cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
  return {"mean": mean, "precision": np.linalg.inv(cov)}


def held_out_distances(fitted: np.ndarray, rows: np.ndarray, shrinkage: float) -> np.ndarray:
  """Distances of `rows` under the detector `_fit(fitted, shrinkage)` would make, cheaply.

  The shrunk covariance is a X^T X + b I (X the centred rows, n of them), so by
  the Woodbury identity its inverse needs only an n x n solve: with a few
  hundred images and 2048 features, far less than inverting 2048 x 2048 for
  each cross-fitting fold.
  """
  mean = fitted.mean(axis=0)
  centred, z = fitted - mean, rows - mean
  n, d = centred.shape
  a = (1 - shrinkage) / (n - 1)
  b = shrinkage * float((centred**2).sum()) / (n - 1) / d
  projected = centred @ z.T  # [n, rows]
  inner = np.linalg.solve((b / a) * np.eye(n) + centred @ centred.T, projected)
  squared = ((z**2).sum(axis=1) - np.einsum("ij,ij->j", projected, inner)) / b
  return np.sqrt(np.maximum(squared, 0.0))


def fit(train_features: np.ndarray, val_features: np.ndarray, shrinkage: float = 0.1) -> dict:
  """Mean and (shrunk) precision of training features; a threshold from out-of-sample distances.

  Shrinkage toward a scaled identity keeps the covariance invertible with
  fewer images than feature dimensions (484 training images, 2048 features).
  The threshold is the empirical 99th percentile of distances of images the
  detector measuring them was not fitted on: each training image's from a
  detector fitted on the other folds (cross-fitting, `FOLDS` folds), and the
  validation images' from the detector itself. In-sample distances are
  smaller than a new image's, and with many more features than images far
  smaller: a threshold on them flagged 7-21% of fresh in-distribution draws.
  Validation alone is too few: 64 distances put their 99th percentile at their
  maximum, which one odd image sets. So a new image like the training set is
  flagged about 1% of the time.
  """
  x = np.asarray(train_features, np.float64)
  detector = _fit(x, shrinkage)
  folds = min(FOLDS, len(x) // 2)
  if folds >= 2:
    held_out, fold = np.empty(len(x)), np.arange(len(x)) % folds
    for k in range(folds):
      held_out[fold == k] = held_out_distances(x[fold != k], x[fold == k], shrinkage)
  else:  # Too few images to hold any out: in-sample, the best there is.
    held_out = mahalanobis(x, detector)
  val = mahalanobis(np.asarray(val_features, np.float64), detector)
  detector["threshold"] = float(np.quantile(np.concatenate([held_out, val]), QUANTILE))
  return detector


def mahalanobis(features, detector):
  """Distances of feature rows to the training mean (numpy or TF)."""
  if isinstance(features, np.ndarray):
    return lite_model.mahalanobis(features, detector["mean"], detector["precision"])
  d = tf.cast(features, tf.float32) - detector["mean"]
  return tf.sqrt(tf.maximum(tf.einsum("ij,jk,ik->i", d, detector["precision"], d), 0.0))


def polarity(images: tf.Tensor) -> tf.Tensor:
  """Each square uint8 image's middle strip minus its brighter lung strip, in grey levels [n].

  image_rules.polarity_strips; txr_lite.preprocess.polarity_of computes the same.
  """
  (top, bottom), (middle, *lungs) = image_rules.polarity_strips(images.shape[1])
  rows = tf.cast(images[:, top:bottom, :, 0], tf.float32)
  brightest = tf.reduce_max(
    tf.stack([tf.reduce_mean(rows[:, :, a:b], axis=[1, 2]) for a, b in lungs]), axis=0
  )
  return tf.reduce_mean(rows[:, :, middle[0] : middle[1]], axis=[1, 2]) - brightest


def smoothness(images: tf.Tensor) -> tf.Tensor:
  """Each square uint8 image's correlation of horizontal neighbours in its middle [n].

  image_rules.smoothness_span; txr_lite.preprocess.smoothness_of computes the same
  (1 where the middle is flat).
  """
  first, end = image_rules.smoothness_span(images.shape[1])
  middle = tf.cast(images[:, first:end, first:end, 0], tf.float32)
  n = tf.shape(middle)[0]
  left, right = (tf.reshape(x, [n, -1]) for x in (middle[:, :, :-1], middle[:, :, 1:]))
  left -= tf.reduce_mean(left, axis=1, keepdims=True)
  right -= tf.reduce_mean(right, axis=1, keepdims=True)
  spread = tf.sqrt(tf.reduce_sum(left * left, axis=1) * tf.reduce_sum(right * right, axis=1))
  covariance = tf.reduce_sum(left * right, axis=1)
  return tf.where(spread > 0, covariance / tf.maximum(spread, 1e-30), 1.0)


def colourfulness(rgb: tf.Tensor) -> tf.Tensor:
  """Hasler-Suesstrunk colourfulness of a [h, w, 3] 0-255 image."""
  r, g, b = tf.unstack(tf.cast(rgb, tf.float32), axis=-1)
  rg, yb = r - g, 0.5 * (r + g) - b
  std = tf.sqrt(tf.math.reduce_variance(rg) + tf.math.reduce_variance(yb))
  mean = tf.sqrt(tf.reduce_mean(rg) ** 2 + tf.reduce_mean(yb) ** 2)
  return std + 0.3 * mean
