"""Exports a SavedModel whose serving signature takes encoded PNG/JPEG bytes.

Clients (TF Serving, other languages) send the file bytes and get P(TB) back;
decoding, grayscale conversion, pad-resizing and scaling live in the graph,
so no client re-implements the preprocessing.
"""

import keras
import tensorflow as tf

from txr_model import input_pipeline


def export_serving(model: keras.Model, path: str, image_size: int) -> None:
  """Writes `path` with a `serve` (= serving_default) endpoint: bytes [N] -> probability [N]."""

  def serve(image_bytes):
    images = tf.map_fn(
      lambda b: input_pipeline.decode_for_model(b, image_size),
      image_bytes,
      fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )
    return {"probability": tf.cast(model(images, training=False), tf.float32)[:, 0]}

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(
    name="serve",
    fn=serve,
    input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
  )
  archive.write_out(path, verbose=False)
