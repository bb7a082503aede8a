"""Finishing a training run: evaluate the saved model, fit the OOD detector, export.

The exported label uses the triage operating point, chosen on validation.
Every score and feature here comes from the float32 model the export serves
(evaluation.outputs), so its threshold and OOD statistics are the served model's.
"""

import os

from absl import logging
import keras
import tensorflow as tf

from txr_model import dataset_attributes
from txr_model import evaluation
from txr_model import export
from txr_model import input_pipeline
from txr_model import metrics
from txr_model import ood
from txr_model import overlay
from txr_model import report_files
from txr_model import run_dir

OPERATING_POINT = metrics.TRIAGE  # The exported label's threshold: screening favours sensitivity.


def finish_run(
  model_dir: str,
  splits: dict,
  seed: int = 0,
  run_info: dict | None = None,
  export_model: bool = True,
  age_bands: str = metrics.AGE_BANDS,
) -> dict:
  """After training: evaluate the saved model, fit the OOD detector, export, log overlays.

  The report (metrics.json) also holds, under "run", the dataset's version,
  each split's images by label, sex and age band, and the OOD detector's
  threshold; the model card rendered from it goes beside it and into the export.

  Args:
    model_dir: the run's folder, holding `model.keras`.
    splits: the run's InputConfig per split name.
    seed: the bootstrap's seed.
    run_info: facts about the run (such as which weights were saved), written
      into metrics.json and the export's metadata.
    export_model: False to evaluate only (a cross-validation fold's model is
      for its estimate, not for serving).
    age_bands: the subgroups' age bands (--age_bands).

  Returns:
    The report written to metrics.json.
  """
  model = keras.models.load_model(os.path.join(model_dir, run_dir.MODEL))
  configs = evaluation.evaluation_configs(splits)
  log_dir = os.path.join(model_dir, run_dir.LOGS)
  facts = {
    **(run_info or {}),
    "dataset_version": input_pipeline.dataset_version(configs["test"]),
    "training_data": dataset_attributes.split_counts(configs, age_bands),
  }
  scored = evaluation.evaluate_split(model, configs, "test", seed, facts, age_bands)
  report = scored.report
  if export_model:
    train = evaluation.outputs(model, configs["train"])
    detector = ood.fit(train.features, scored.validation.features)
    report["run"]["ood"] = {
      "threshold": detector["threshold"],
      "quantile": ood.QUANTILE,
      "n_train": len(train.labels),
      "n_validation": len(scored.validation.labels),
    }
  report_files.write_report(scored, "test", log_dir, model_dir)
  if not export_model:
    return report
  export_dir = os.path.join(model_dir, run_dir.EXPORT)
  points = report["test"]["operating_points"]
  export.export_serving(
    model,
    export_dir,
    detector,
    {name: point["threshold"] for name, point in points.items()},
    OPERATING_POINT,
    # Served images are shrunk as the builder shrank the training images.
    max_side=input_pipeline.max_side(configs["test"].dataset, configs["test"].data_dir),
    thresholds_from={
      "dataset": configs["validation"].dataset,
      "split": "validation",
      "n": len(scored.validation.labels),
      "auc": report["test"]["validation_auc"],
    },
    run={"dataset": configs["test"].dataset, "test_auc": report["test"]["auc"], **report["run"]},
    files={run_dir.MODEL_CARD: report_files.card(report)},
  )
  logging.info("Wrote %s", export_dir)
  _log_overlays(export_dir, configs["validation"], log_dir)
  return report


def _log_overlays(export_dir, base, log_dir, count=4):
  """Grad-CAM overlays of a few validation images, from the exported `explain` signature."""
  ds = input_pipeline.examples(base, base.split)
  explain = tf.saved_model.load(export_dir).signatures["explain"]
  images = []
  for example in ds.take(count):
    out = explain(image_bytes=example["image"][None])
    images.append(overlay.overlay(out["image"][0], out["heatmap"][0]))
  with tf.summary.create_file_writer(os.path.join(log_dir, run_dir.EVALUATION_LOGS)).as_default():
    tf.summary.image("validation/grad_cam", tf.stack(images), step=0, max_outputs=count)
