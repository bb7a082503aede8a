"""An evaluation's files: metrics.json, scores_<split>.csv, the curve PNGs and TensorBoard.

Writes what `evaluation` computed (local or gs:// paths), and reads the
scores back for a cross-validation's pooled summary.
"""

import csv
import json
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf

from txr_model import model_card
from txr_model import plots
from txr_model import run_dir

SCORE_COLUMNS = ("dataset", "filename", "label", "score")


def json_safe(value):
  """JSON has no NaN: write it as null."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON (NaN as null) to a local or gs:// path."""
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(json_safe(value), f, indent=2, sort_keys=True)


def card(report: dict) -> str:
  """The model card of a report, rendered from exactly what its metrics.json holds (write_json)."""
  return model_card.render(json.loads(json.dumps(json_safe(report), sort_keys=True)))


def write_scores(path: str, cases) -> None:
  """Writes each case's dataset, file name, label and score as CSV (local or gs://).

  Args:
    path: the CSV file.
    cases: an `evaluation.Outputs`.
  """
  with tf.io.gfile.GFile(path, "w") as f:
    writer = csv.writer(f)
    writer.writerow(SCORE_COLUMNS)
    for dataset, filename, label, score in zip(
      cases.datasets, cases.filenames, cases.labels, cases.scores, strict=True
    ):
      writer.writerow([dataset, filename, int(label), repr(float(score))])


def read_scores(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(labels, scores, datasets, file names) from a `write_scores` file."""
  with tf.io.gfile.GFile(path) as f:
    rows = list(csv.DictReader(f))
  return (
    np.array([int(r["label"]) for r in rows], int),
    np.array([float(r["score"]) for r in rows], float),
    np.array([r["dataset"] for r in rows], str),
    np.array([r["filename"] for r in rows], str),
  )


def write_report(scored, split: str, log_dir: str, model_dir: str) -> None:
  """Writes one evaluation's files, and logs each path written.

  metrics.json (the whole report), MODEL_CARD.md (rendered from it),
  scores_<split>.csv (each case's score), roc.png and reliability.png (with
  matplotlib) go into `model_dir`;
  TensorBoard scalars and curves under `log_dir`/evaluation.

  Args:
    scored: `evaluation.evaluate_split`'s Evaluation.
    split: the evaluated split's key in its report.
    log_dir: TensorBoard folder.
    model_dir: where the files go.
  """
  report, result = scored.report, scored.report[split]
  tf.io.gfile.makedirs(model_dir)
  written = [
    os.path.join(model_dir, run_dir.METRICS),
    os.path.join(model_dir, run_dir.MODEL_CARD),
    run_dir.scores_path(model_dir, split),
  ]
  write_json(written[0], report)
  with tf.io.gfile.GFile(written[1], "w") as f:
    f.write(card(report))
  write_scores(written[2], scored.evaluated)
  pngs = plots.plot_curves(scored.validation, scored.evaluated, result, split)
  for name in ("roc", "reliability"):
    if name in pngs:  # Only with matplotlib.
      written.append(os.path.join(model_dir, f"{name}.png"))
      with tf.io.gfile.GFile(written[-1], "wb") as f:
        f.write(pngs[name])
  with tf.summary.create_file_writer(os.path.join(log_dir, run_dir.EVALUATION_LOGS)).as_default():
    tf.summary.scalar(f"{split}/auc", result["auc"], step=0)
    tf.summary.scalar(f"{split}/ece", result["calibration"]["ece"], step=0)
    tf.summary.scalar("validation/ece", report["validation"]["calibration"]["ece"], step=0)
    for name, point in result["operating_points"].items():
      for key in ("sensitivity", "specificity", "ppv", "npv"):
        tf.summary.scalar(f"{split}/{name}/{key}", point[key] or 0.0, step=0)
    plots.summarize_curves(pngs, split)
  for path in [*written, os.path.join(log_dir, run_dir.EVALUATION_LOGS)]:
    logging.info("Wrote %s", path)  # What was written, not what might have been.
