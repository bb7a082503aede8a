"""LiteRT (.tflite) exports of a trained run, for txr-predict-lite on machines without TensorFlow.

Each variant is converted by TensorFlow's own converter (`tf.lite.TFLiteConverter`):
float32 as trained, float16 weights, and int8 (full-integer post-training
quantization of every layer, calibrated on images of the TRAINING split only).
The network takes the uint8 gray images the Keras model takes and returns P(TB)
and the pooled features. Quantization moves scores, so each variant's
thresholds (triage and Youden; the label uses the SavedModel's operating point,
finish.OPERATING_POINT) are chosen again on the validation split with that
variant's own scores, as the LiteRT interpreter computes them
(txr_lite.lite_model, the predictor's code), and its OOD detector is fitted on
its own training and validation features. The files and their metadata are
txr_lite/contract.py's.
"""

import dataclasses
import importlib.metadata
import json
import os
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_lite import contract
from txr_lite import lite_model
from txr_model import evaluation
from txr_model import finish
from txr_model import input_pipeline
from txr_model import metrics
from txr_model import model as model_lib
from txr_model import ood
from txr_model import run_config
from txr_model import run_dir

CALIBRATION_IMAGES = 300  # Post-training quantization needs a few hundred (TF's guide: ~100-500).


def network(model: keras.Model) -> keras.Model:
  """The float32 model with named outputs 'probability' [n, 1], 'features' [n, d], 'class_map'.

  'class_map' [n, h, w, 1] is the base's last feature maps weighted by the
  classifier's kernel (the class activation map). The head is global pooling
  then one dense layer, so this is, up to a positive factor, the Grad-CAM of
  the SavedModel's `explain` signature, with no gradient: txr-predict-lite
  draws its heat maps from it in numpy.
  """
  served = model_lib.as_float32(model)
  pool = served.get_layer(model_lib.POOL)
  head = served.get_layer(model_lib.CLASSIFIER)
  weighted = keras.layers.Dense(1, use_bias=False, name="class_map")
  class_map = weighted(pool.input)
  weighted.set_weights([head.get_weights()[0]])
  return keras.Model(
    served.input,
    {"probability": served.output, "features": pool.output, "class_map": class_map},
  )


def convert(model: keras.Model, variants, calibration: np.ndarray | None = None) -> dict:
  """Converts a `build_model` model to .tflite flatbuffers, one per variant.

  The network is exported once as a SavedModel (Keras's own export) and each
  variant converted from it: converting from the Keras model exports it again
  for every variant.

  Args:
    model: the trained model (any dtype policy).
    variants: some of 'float32', 'float16' and 'int8'.
    calibration: for int8: uint8 images [n, size, size, 1] from the training split.

  Returns:
    {variant: the .tflite file's bytes}.
  """
  for variant in variants:
    if variant not in contract.VARIANTS:
      raise ValueError(f"variant={variant!r}: expected one of {', '.join(contract.VARIANTS)}.")
  if "int8" in variants and (calibration is None or not len(calibration)):
    raise ValueError("int8 needs calibration images from the training split.")
  out = {}
  with tempfile.TemporaryDirectory() as saved:
    network(model).export(saved, verbose=False)
    for variant in variants:
      converter = tf.lite.TFLiteConverter.from_saved_model(saved)
      if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
      elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        # Every layer in int8, or the conversion fails: no silent float fallback.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
      out[variant] = converter.convert()
  return out


def read_images(config: input_pipeline.InputConfig, limit: int | None = None):
  """(uint8 model inputs [n, size, size, 1], labels [n]) of a split, in dataset order."""
  model_input = input_pipeline.model_input_fn(config)
  ds = input_pipeline.examples(config, config.split)
  if limit is not None:
    ds = ds.take(limit)
  ds = ds.map(lambda e: (model_input(e["image"]), e["label"]), num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = [], []
  for image, label in ds.batch(evaluation.BATCH_SIZE).prefetch(tf.data.AUTOTUNE):
    images.append(image.numpy())
    labels.append(label.numpy())
  size = config.image_size
  return (
    np.concatenate(images) if images else np.zeros((0, size, size, 1), np.uint8),
    np.concatenate(labels).astype(int) if labels else np.zeros(0, int),
  )


def degenerate(labels, scores, threshold: float) -> str | None:
  """Why a variant's threshold would make its labels meaningless, or None.

  A model below chance on validation, or a threshold at or below every
  validation score (every film abnormal) or above all of them (every film
  normal), labels nothing: txr-export-lite refuses to write it unless asked.
  """
  auc = metrics.roc_auc(labels, scores)
  if auc < 0.5:
    return f"its validation AUC is {auc:.3f}, below chance"
  if threshold <= float(np.min(scores)):
    return f"its threshold {threshold:.4f} reads every validation film abnormal"
  if threshold > float(np.max(scores)):
    return f"its threshold {threshold:.4f} reads every validation film normal"
  return None


def export_lite(
  model_dir: str,
  variants=contract.VARIANTS,
  calibration_images: int = CALIBRATION_IMAGES,
  out_dir: str | None = None,
  allow_degenerate: bool = False,
) -> dict:
  """Writes each variant's .tflite, metadata and OOD statistics into the run's export/.

  Args:
    model_dir: a txr-train run folder (model.keras, run_config.json, export/).
    variants: which of contract.VARIANTS to write.
    calibration_images: training images that calibrate int8.
    out_dir: where to write; default `<model_dir>/export`.
    allow_degenerate: write a variant whose threshold labels nothing (`degenerate`).

  Returns:
    Per variant: (its metadata as written, the .tflite's path, its size in bytes).
  """
  trained = run_config.RunConfig.load(model_dir)
  if trained is None:
    raise ValueError(f"{model_dir}: no {run_config.FILE}; point at a txr-train output folder.")
  if trained.folds:
    raise ValueError(
      f"{model_dir} is a cross-validation run: its fold models are for the estimate."
      " Train without --folds to export a model."
    )
  out_dir = out_dir or os.path.join(model_dir, run_dir.EXPORT)
  model = keras.models.load_model(os.path.join(model_dir, run_dir.MODEL))
  size = model.input_shape[1]
  base = input_pipeline.InputConfig(trained.dataset, trained.data_dir, size, evaluation.BATCH_SIZE)
  splits = evaluation.evaluation_configs(input_pipeline.run_splits(base))
  train_images, _ = read_images(splits["train"])
  val_images, val_labels = read_images(splits["validation"])
  calibration = train_images[:calibration_images]
  run = _run_facts(model_dir, trained, splits["train"])
  written = {}
  for variant, flatbuffer in convert(model, variants, calibration).items():
    lite = lite_model.LiteModel(flatbuffer)
    val_scores, val_features = lite.predict(val_images)
    _, train_features = lite.predict(train_images)
    detector = ood.fit(train_features, val_features)
    thresholds = {
      metrics.YOUDEN: metrics.youden_threshold(val_labels, val_scores),
      metrics.TRIAGE: metrics.triage_threshold(val_labels, val_scores),
    }
    meta = contract.Metadata(
      variant=variant,
      image_size=size,
      max_side=input_pipeline.max_side(trained.dataset, trained.data_dir),
      operating_point=finish.OPERATING_POINT,
      thresholds=thresholds,
      ood_threshold=detector["threshold"],
      **ood.RULES,
      thresholds_from={
        "dataset": trained.dataset,
        "split": "validation",
        "n": int(val_labels.size),
        "auc": metrics.roc_auc(val_labels, val_scores),
      },
      run=run,
      calibration={"split": "train", "n": len(calibration)} if variant == "int8" else None,
    )
    files = contract.lite_files(out_dir, variant)
    problem = degenerate(val_labels, val_scores, meta.threshold)
    if problem and not allow_degenerate:
      raise ValueError(
        f"the {variant} model was not written: {problem} (N={val_labels.size}). Train a model"
        " that learns, or pass --allow_degenerate to write it anyway."
      )
    if problem:
      logging.warning("Writing the %s model although %s (--allow_degenerate).", variant, problem)
    meta = write_variant(files, meta, flatbuffer, detector)
    written[variant] = (meta, files.tflite, len(flatbuffer))
    logging.info(
      "Wrote %s (%.1f MB): validation AUC %.4f, %s threshold %.4f",
      files.tflite, len(flatbuffer) / 1e6, meta.thresholds_from["auc"], meta.operating_point,
      meta.threshold,
    )  # fmt: skip
  return written


def _run_facts(model_dir, trained, train_config) -> dict:
  """Where the model came from: the run, its dataset and version, txr's version."""
  facts = {
    "model_dir": model_dir,
    "dataset": trained.dataset,
    "dataset_version": input_pipeline.dataset_version(train_config),
    "mode": trained.mode,
    "weights": trained.weights,
    "txr_version": importlib.metadata.version("txr"),
  }
  metrics_path = os.path.join(model_dir, run_dir.METRICS)
  if tf.io.gfile.exists(metrics_path):
    with tf.io.gfile.GFile(metrics_path) as f:
      facts.update(json.load(f).get("run") or {})
  return facts


def write_variant(
  files: contract.LiteFiles, meta: contract.Metadata, flatbuffer: bytes, detector: dict
) -> contract.Metadata:
  """Writes the network, the OOD statistics, then the metadata bound to both (the predictor's key).

  Returns:
    The metadata as written, with the two files' SHA-256.
  """
  ood_data = lite_model.detector_bytes(detector)
  meta = dataclasses.replace(
    meta, files={"tflite": contract.digest(flatbuffer), "ood": contract.digest(ood_data)}
  )
  tf.io.gfile.makedirs(os.path.dirname(files.tflite))
  if tf.io.gfile.exists(files.metadata):  # A kill mid-write must leave no metadata to trust.
    tf.io.gfile.remove(files.metadata)
  for path, data in ((files.tflite, flatbuffer), (files.ood, ood_data)):
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)
  with tf.io.gfile.GFile(files.metadata, "w") as f:
    f.write(meta.to_json())
  return meta
