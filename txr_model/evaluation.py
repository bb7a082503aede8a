"""Scoring a split and reporting it: metrics, curves, metrics.json and TensorBoard.

Operating points (Youden's J, and the WHO triage point: the highest
specificity with sensitivity >= 0.90) are chosen on the validation split and
only applied to the evaluated split, so its sensitivity and specificity are
honest estimates.
"""

import dataclasses
import io
import json
import math
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import metrics
from txr_model import model as model_lib


def outputs(model, config):
  """(labels, scores, pooled features) of one split, in dataset order, on one device."""
  ds = input_pipeline.make_dataset(config)
  # Labels without decoding images again; the same order, since nothing shuffles.
  examples = input_pipeline.examples(config, config.split)
  labels = np.array([int(y) for y in examples.map(lambda ex: ex["label"])], int)
  both = keras.Model(model.input, [model.output, model.get_layer(model_lib.POOL).output])
  scores, features = both.predict(ds.map(lambda x, y: x), verbose=0)
  if len(scores) != len(labels):
    raise RuntimeError(f"{len(scores)} predictions for {len(labels)} labels in {config.split}")
  return labels, scores[:, 0].astype(float), features


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


def plot_curves(val, ev, report, split) -> dict[str, bytes]:
  """ROC (with the operating points) and PR curves as PNG bytes; {} without matplotlib."""
  try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
  except ImportError:
    logging.warning("matplotlib is not installed (pip install 'txr[plot]'): no roc.png.")
    return {}

  def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()

  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  fpr, tpr, _ = metrics.roc_curve(*ev)
  ax.plot(fpr, tpr, label=f"{split} (AUC {report['auc']:.3f})")
  fpr, tpr, _ = metrics.roc_curve(*val)
  ax.plot(fpr, tpr, ":", label="validation")
  ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
  ax.axhline(0.9, color="0.6", lw=0.6, ls="--")
  for name, marker in (("youden", "o"), ("triage", "s")):
    point = report["operating_points"][name]
    label = f"{name} (threshold {point['threshold']:.3f} from validation)"
    ax.plot(1 - point["specificity"], point["sensitivity"], marker, label=label)
  ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
  ax.set_title(f"ROC, {split} split")
  ax.legend(loc="lower right", fontsize=8)
  roc = png(fig)
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  precision, recall, _ = metrics.pr_curve(*ev)
  ax.plot(recall, precision)
  ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01))
  ax.set_title(f"Precision-recall, {split} split")
  return {"roc": roc, "pr": png(fig)}


def report_split(model, configs, split, seed, log_dir, model_dir, run_info=None):
  """Evaluates configs[split] with thresholds from configs['validation'].

  Writes metrics.json (with `run_info`, if given, under "run"), roc.png and
  TensorBoard summaries; returns the report and the (labels, scores, features)
  of validation and of `split`.
  """
  val = outputs(model, configs["validation"])
  ev = val if split == "validation" else outputs(model, configs[split])
  report = {
    "validation": metrics.summarize(*val[:2], *val[:2], seed=seed),
    split: metrics.summarize(*val[:2], *ev[:2], seed=seed),
  }
  if run_info:
    report["run"] = run_info
  result = report[split]
  logging.info(
    "%s AUC %.3f (95%% CI %.3f-%.3f); triage point: sensitivity %.3f, specificity %.3f",
    split,
    result["auc"],
    *result["auc_ci95"],
    result["operating_points"]["triage"]["sensitivity"],
    result["operating_points"]["triage"]["specificity"],
  )
  write_json(os.path.join(model_dir, "metrics.json"), report)
  pngs = plot_curves(val[:2], ev[:2], result, split)
  if "roc" in pngs:
    with tf.io.gfile.GFile(os.path.join(model_dir, "roc.png"), "wb") as f:
      f.write(pngs["roc"])
  with tf.summary.create_file_writer(os.path.join(log_dir, "evaluation")).as_default():
    tf.summary.scalar(f"{split}/auc", result["auc"], step=0)
    for name, point in result["operating_points"].items():
      for key in ("sensitivity", "specificity", "ppv", "npv"):
        tf.summary.scalar(f"{split}/{name}/{key}", point[key] or 0.0, step=0)
    for name, png in pngs.items():
      tf.summary.image(f"{split}/{name}_curve", tf.io.decode_png(png, channels=3)[None], step=0)
  return report, val, ev


def evaluation_configs(splits: dict) -> dict:
  """The training run's split configs, for one plain pass each (no augmentation)."""
  return {
    name: dataclasses.replace(
      c, training=False, repeat=False, drop_remainder=False, cache=False, global_batch_size=32
    )
    for name, c in splits.items()
  }
