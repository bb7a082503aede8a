"""Exports a SavedModel whose signatures take encoded PNG/JPEG bytes.

`serving_default` returns P(TB), the label at the saved threshold and the
out-of-distribution flag and score; `explain` returns a Grad-CAM heat map.
Decoding, grayscale conversion and pad-resizing live in the graph (scaling is
in the model), so no client (TF Serving, another language, txr-predict)
re-implements them.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import model as model_lib
from txr_model import ood

METADATA = "assets.extra/txr.json"  # Beside the graph; TF Serving ignores assets.extra.


def _decode(image_bytes, image_size):
  """Decodes one image's bytes to (model input, colourfulness, width / height)."""
  rgb = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
  shape = tf.cast(tf.shape(rgb), tf.float32)
  gray = tf.image.rgb_to_grayscale(rgb)
  image = input_pipeline.resize_to_square(gray, image_size)
  return image, ood.colourfulness(rgb), shape[1] / shape[0]


def export_serving(
  model: keras.Model, path: str, threshold: float, detector: dict, metadata: dict
) -> None:
  """Writes the SavedModel to `path` and its metadata JSON beside the graph."""
  image_size = model.input_shape[1]
  maps_of = model_lib.feature_maps(model)  # uint8 images -> the base's last feature maps
  pool = model.get_layer(model_lib.POOL)
  head = model.get_layer(model_lib.CLASSIFIER)  # Dropout is the identity at inference.
  # Variables, not graph constants: the 2048 x 2048 precision matrix is 16 MB.
  ood_vars = tf.Module()
  ood_vars.mean = tf.Variable(np.asarray(detector["mean"], np.float32), trainable=False)
  ood_vars.precision = tf.Variable(np.asarray(detector["precision"], np.float32), trainable=False)
  in_graph = {"mean": ood_vars.mean, "precision": ood_vars.precision}

  def decode_batch(image_bytes):
    return tf.map_fn(
      lambda b: _decode(b, image_size),
      image_bytes,
      fn_output_signature=(
        tf.TensorSpec([image_size, image_size, 1], tf.uint8),
        tf.TensorSpec([], tf.float32),
        tf.TensorSpec([], tf.float32),
      ),
    )

  def serve(image_bytes):
    images, colour, aspect = decode_batch(image_bytes)
    pooled = pool(maps_of(images, training=False))
    probability = tf.cast(head(pooled), tf.float32)[:, 0]
    score = ood.mahalanobis(pooled, in_graph) / detector["threshold"]
    flagged = (
      (score > 1.0)
      | (colour > ood.MAX_COLOURFULNESS)
      | (aspect < ood.ASPECT_RANGE[0])
      | (aspect > ood.ASPECT_RANGE[1])
    )
    return {
      "probability": probability,
      "label": tf.cast(probability >= threshold, tf.int32),
      "ood_score": score,
      "out_of_distribution": flagged,
    }

  def explain(image_bytes):
    images, _, _ = decode_batch(image_bytes)
    with tf.GradientTape() as tape:
      maps = maps_of(images, training=False)
      tape.watch(maps)
      probability = tf.cast(head(pool(maps)), tf.float32)[:, 0]
    grads = tape.gradient(probability, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(weights * maps, tf.float32), axis=-1))[..., None]
    cam = tf.image.resize(cam, [image_size, image_size])[..., 0]
    cam /= tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8
    return {"heatmap": cam, "probability": probability}

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.ood = ood_vars  # Tracked as an attribute, so its variables are saved.
  signature = [tf.TensorSpec([None], tf.string, name="image_bytes")]
  archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
  archive.add_endpoint(name="explain", fn=explain, input_signature=signature)
  archive.write_out(path, verbose=False)
  metadata = {
    **metadata,
    "image_size": image_size,
    "threshold": threshold,
    "ood_threshold": detector["threshold"],
    "max_colourfulness": ood.MAX_COLOURFULNESS,
    "aspect_range": list(ood.ASPECT_RANGE),
  }
  tf.io.gfile.makedirs(os.path.join(path, os.path.dirname(METADATA)))
  with tf.io.gfile.GFile(os.path.join(path, METADATA), "w") as f:
    json.dump(metadata, f, indent=2, default=lambda v: np.asarray(v).tolist())
