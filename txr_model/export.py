"""Exports a SavedModel whose signatures take encoded PNG/JPEG bytes.

`serving_default` returns, per element, P(TB), the label at the saved
threshold, the out-of-distribution flag and score (both by the rules of
`txr_lite.contract`, which the lite predictor applies too), and `error` (''
when the element is valid; then probability and score are -1 and label -1);
`explain` returns a Grad-CAM heat map and the image the model saw. Checking,
decoding and resizing live in the graph (decode.py; scaling is in the
model), so no client (TF Serving, another language, txr-predict)
re-implements them. The graph computes in float32 whatever the training
policy.

The export is written beside its final place and renamed into it (locally),
and its metadata file is written last, so a kill never leaves an `export/`
that txr-predict accepts.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from txr_lite import contract
from txr_model import decode
from txr_model import model as model_lib
from txr_model import ood


def export_serving(
  model: keras.Model,
  path: str,
  detector: dict,
  thresholds: dict,
  operating_point: str,
  max_side: int | None = None,
  thresholds_from: dict | None = None,
  run: dict | None = None,
  files: dict[str, str] | None = None,
) -> contract.Metadata:
  """Writes the SavedModel to `path` and its metadata (`contract.Metadata`) beside the graph.

  Args:
    model: the trained model (any dtype policy).
    path: the export folder (local or gs://); an existing export is replaced.
    detector: the fitted OOD detector (ood.fit).
    thresholds: {operating point: threshold}, chosen on validation.
    operating_point: the one whose threshold labels films.
    max_side: the training images' stored longest side (the dataset's
      builder config), so served images are shrunk the same way; None if the
      dataset stored the source pixels.
    thresholds_from: where the thresholds were chosen (dataset, split, n, auc).
    run: facts about the run, for people reading the metadata.
    files: {name: text} of files written into the export with the graph
      (its MODEL_CARD.md), so no export is ever in place without them.

  Returns:
    The metadata written.
  """
  model = model_lib.as_float32(model)
  meta = contract.Metadata(
    variant=contract.SAVED_MODEL,
    image_size=model.input_shape[1],
    max_side=max_side,
    operating_point=operating_point,
    thresholds={k: float(v) for k, v in thresholds.items()},
    ood_threshold=float(detector["threshold"]),
    **ood.RULES,
    thresholds_from=thresholds_from,
    run=run or {},
  )
  maps_of = model_lib.feature_maps(model)  # uint8 images -> the base's last feature maps
  pool = model.get_layer(model_lib.POOL)
  head = model.get_layer(model_lib.CLASSIFIER)  # Dropout is the identity at inference.
  # Variables, not graph constants: the 2048 x 2048 precision matrix is 16 MB.
  in_graph = {
    key: tf.Variable(np.asarray(detector[key], np.float32), trainable=False)
    for key in ("mean", "precision")
  }

  def serve(image_bytes):
    images, colour, aspect, error = decode.decode_batch(image_bytes, meta.image_size, max_side)
    valid = error == ""
    pooled = pool(maps_of(images, training=False))
    probability = tf.where(valid, head(pooled)[:, 0], -1.0)
    score = tf.where(valid, ood.mahalanobis(pooled, in_graph) / meta.ood_threshold, -1.0)
    checks = ood.polarity(images), ood.smoothness(images)
    flagged = meta.out_of_distribution(score, colour, aspect, *checks)
    return {
      "probability": probability,
      "label": tf.where(valid, tf.cast(meta.label(probability), tf.int32), -1),
      "ood_score": score,
      "out_of_distribution": flagged & valid,
      "error": error,
    }

  def explain(image_bytes):
    images, _, _, error = decode.decode_batch(image_bytes, meta.image_size, max_side)
    cam, probability = grad_cam(model, maps_of, images)
    return {"heatmap": cam, "probability": probability, "image": images, "error": error}

  # Not archive.track(model): the endpoints' own variables are saved with them, and Keras
  # 3.15 saves tracked ones a second time (the export was 183 MB for 104 MB of weights).
  archive = keras.export.ExportArchive()
  signature = [tf.TensorSpec([None], tf.string, name="image_bytes")]
  archive.add_endpoint(name="serve", fn=serve, input_signature=signature)
  archive.add_endpoint(name="explain", fn=explain, input_signature=signature)

  def write(target):
    archive.write_out(target, verbose=False)
    for name, text in (files or {}).items():
      with tf.io.gfile.GFile(os.path.join(target, name), "w") as f:
        f.write(text)

  write_atomically(path, write, meta.to_json())
  return meta


def grad_cam(model: keras.Model, maps_of: keras.Model, images: tf.Tensor):
  """Grad-CAM heat maps of a float32 `build_model` model, and its P(TB).

  Args:
    model: the float32 model.
    maps_of: `model_lib.feature_maps(model)`, built once by the caller.
    images: uint8 [n, size, size, 1].

  Returns:
    (heat maps [n, size, size] scaled to a maximum of 1 (all zero where no
    evidence points to TB), P(TB) [n]).
  """
  pool = model.get_layer(model_lib.POOL)
  head = model.get_layer(model_lib.CLASSIFIER)  # Dropout is the identity at inference.
  with tf.GradientTape() as tape:
    maps = maps_of(images, training=False)
    tape.watch(maps)
    # The logit, not the sigmoid: at logit 20 the sigmoid is 1.0 in float32 and its gradient
    # 0, which would blank the maps of the most confidently abnormal films.
    logit = (tf.matmul(pool(maps), head.kernel) + head.bias)[:, 0]
  grads = tape.gradient(logit, maps)
  weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
  cam = tf.nn.relu(tf.reduce_sum(tf.cast(weights * maps, tf.float32), axis=-1))[..., None]
  cam = tf.image.resize(cam, tf.shape(images)[1:3])[..., 0]
  cam /= tf.reduce_max(cam, axis=(1, 2), keepdims=True) + 1e-8
  return cam, tf.sigmoid(logit)


def write_atomically(path: str, write_graph, metadata: str) -> None:
  """Writes an export so that a kill at any point leaves no partial `path` that loads.

  The export is written whole to `<path>.partial`, its metadata (which
  txr-predict requires) last, while the previous export stays in place.
  Locally the previous one is then moved aside to `<path>.old` (not deleted)
  and the new one renamed into place, so a kill between the two renames loses
  nothing: the next write puts it back. Object stores (gs://) cannot rename
  folders: there `_copy_over` replaces the files in place, the old metadata
  removed first and the new written last, so a kill during the copy leaves a
  `path` that no predictor loads and a complete `<path>.partial`.

  Args:
    path: the export folder; an existing export there is replaced.
    write_graph: writes the SavedModel into the folder it is given.
    metadata: the text written to `<path>/assets.extra/txr.json`, last.
  """
  local = renames_folders(path)
  target, aside = f"{path}.partial", f"{path}.old"
  if local and tf.io.gfile.exists(aside):  # A kill came between the renames below.
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(aside)
    else:
      tf.io.gfile.rename(aside, path)
  if tf.io.gfile.exists(target):
    tf.io.gfile.rmtree(target)
  write_graph(target)
  tf.io.gfile.makedirs(os.path.join(target, os.path.dirname(contract.SAVED_MODEL_METADATA)))
  with tf.io.gfile.GFile(os.path.join(target, contract.SAVED_MODEL_METADATA), "w") as f:
    f.write(metadata)
  if not local:
    _copy_over(target, path)
    return
  if tf.io.gfile.exists(path):
    tf.io.gfile.rename(path, aside)
  tf.io.gfile.rename(target, path)
  if tf.io.gfile.exists(aside):
    tf.io.gfile.rmtree(aside)


def renames_folders(path: str) -> bool:
  """Whether `path`'s file system renames a folder at once: local ones do, object stores not."""
  return "://" not in path


def _files(folder: str) -> set[str]:
  """The files under `folder`, relative to it."""
  return {
    os.path.relpath(os.path.join(parent, name), folder)
    for parent, _, names in tf.io.gfile.walk(folder)
    for name in names
  }


def _copy_over(source: str, path: str) -> None:
  """Replaces the export at `path` by the complete one at `source`, file by file, then drops it.

  The old metadata goes first and the new comes last, so `path` loads only
  whole: the old export until the copy starts, the new one once it ends.
  """
  metadata = contract.SAVED_MODEL_METADATA
  if tf.io.gfile.exists(os.path.join(path, metadata)):
    tf.io.gfile.remove(os.path.join(path, metadata))
  new = _files(source)
  old = _files(path) if tf.io.gfile.exists(path) else set()
  for name in sorted(new - {metadata}) + [metadata]:
    tf.io.gfile.makedirs(os.path.dirname(os.path.join(path, name)))
    tf.io.gfile.copy(os.path.join(source, name), os.path.join(path, name), overwrite=True)
  for name in old - new:
    tf.io.gfile.remove(os.path.join(path, name))
  tf.io.gfile.rmtree(source)
