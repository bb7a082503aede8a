"""Scoring a split and reporting it: metrics, curves, metrics.json and TensorBoard.

Operating points (Youden's J, and the WHO triage point: the highest
specificity with sensitivity >= 0.90) are chosen on the validation split and
only applied to the evaluated split, so its sensitivity and specificity are
honest estimates. The report says which dataset and split chose them and
which were evaluated (they differ in a cross-site evaluation).
"""

import collections
import csv
import dataclasses
import io
import json
import math
import os
from typing import NamedTuple
import weakref

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_data import geometry
from txr_model import input_pipeline
from txr_model import metrics
from txr_model import model as model_lib


class Outputs(NamedTuple):
  """A split's cases in dataset order: what the model said about each."""

  labels: np.ndarray  # 0/1
  scores: np.ndarray  # probability of abnormal
  features: np.ndarray  # pooled base features
  datasets: np.ndarray  # the TFDS name/config each case came from
  filenames: np.ndarray


_SCORERS = weakref.WeakKeyDictionary()  # model -> its float32 copy's (score, pooled features)


def _scorer(model: keras.Model) -> keras.Model:
  """The float32 model the export serves, with its pooled features as a second output.

  Thresholds and the OOD detector are fitted on these scores and features, so
  they are the served model's, whatever the training precision. Built once per
  model: each new one traces predict again.
  """
  if model not in _SCORERS:
    served = model_lib.as_float32(model)
    _SCORERS[model] = keras.Model(
      served.input, [served.output, served.get_layer(model_lib.POOL).output]
    )
  return _SCORERS[model]


def outputs(model, config) -> Outputs:
  """(labels, scores, pooled features, datasets, file names) of one split, on one device.

  Each image is scored in the same pass that reads its label and file name,
  so no reordering of the reads can pair a score with another image's label.

  Args:
    model: a `build_model` model (any dtype policy; scored in float32).
    config: the split to read (not augmented or shuffled here).

  Returns:
    The split's Outputs, in read order.
  """
  model_input = input_pipeline.model_input_fn(config)

  def image_and_case(example):
    case = (example["label"], example["dataset"], example["image/filename"])
    return model_input(example["image"]), case

  ds = input_pipeline.examples(config, config.split).map(image_and_case, tf.data.AUTOTUNE)
  scorer, scores, features, cases = _scorer(model), [], [], []
  for images, case in ds.batch(config.global_batch_size).prefetch(tf.data.AUTOTUNE):
    score, feature = scorer.predict_on_batch(images)
    scores.append(score[:, 0])
    features.append(feature)
    cases.extend(zip(*(column.numpy() for column in case), strict=True))
  keys = [(d.decode(), f.decode()) for _, d, f in cases]
  (dataset, filename), times = (
    collections.Counter(keys).most_common(1)[0] if keys else (("", ""), 1)
  )
  if times > 1:  # Scores are joined to their images by file name (scores_<split>.csv).
    raise ValueError(
      f"{dataset} {config.split}: {filename} appears {times} times; file names identify the"
      " images: rebuild the dataset from a tree whose file names are unique."
    )
  return Outputs(
    np.array([int(y) for y, _, _ in cases], int),
    np.concatenate(scores).astype(float) if scores else np.zeros(0),
    np.concatenate(features) if features else np.zeros((0, 0)),
    np.array([d for d, _ in keys], str),
    np.array([f for _, f in keys], str),
  )


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
  pr = png(fig)
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, label="perfect calibration")
  curves = [(split, report["calibration"], "o-")]
  if split != "validation":
    curves.append(("validation", metrics.calibration(*val), "s:"))
  for name, calibration, style in curves:
    filled = [b for b in calibration["bins"] if b["n"]]
    x = [b["mean_score"] for b in filled]
    y = [b["fraction_positive"] for b in filled]
    ax.plot(x, y, style, label=f"{name}: ECE {calibration['ece']:.3f}, N={calibration['n']}")
    if name == split:  # Each bin's count, for the evaluated split.
      for b in filled:
        ax.annotate(str(b["n"]), (b["mean_score"], b["fraction_positive"]), fontsize=7,
                    textcoords="offset points", xytext=(4, -10))  # fmt: skip
  ax.set(xlabel="mean predicted probability", ylabel="fraction abnormal", xlim=(0, 1))
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(
    f"Reliability, {split} split ({report['calibration']['num_bins']} equal bins;"
    " numbers: images per bin)",
    fontsize=9,
  )
  ax.legend(loc="upper left", fontsize=8)
  return {"roc": roc, "pr": pr, "reliability": png(fig)}


def describe_input(config, cases: Outputs) -> dict:
  """Which images a report covers: dataset, split, cross-validation folds, N.

  Args:
    config: the InputConfig read.
    cases: its outputs.

  Returns:
    A JSON-ready dict.
  """
  out = {"dataset": config.dataset, "split": config.split, "n": int(len(cases.labels))}
  if config.folds:
    out.update(folds=list(config.folds), num_folds=config.num_folds)
  return out


def report_split(model, configs, split, seed, log_dir, model_dir, run_info=None):
  """Evaluates configs[split] with thresholds from configs['validation'].

  Writes metrics.json (with `run_info`, if given, under "run"), roc.png,
  reliability.png and scores_<split>.csv (each case's score) into
  `model_dir`, and TensorBoard summaries under `log_dir`/evaluation. With
  several datasets, each summary has a "by_group" entry per dataset.

  Args:
    model: the Keras model.
    configs: InputConfigs: 'validation' chooses the thresholds; `split` is
      evaluated (the two may read different datasets).
    split: the key of the evaluated config, also its name in the report.
    seed: the bootstrap's seed.
    log_dir: TensorBoard folder.
    model_dir: where the files go.
    run_info: facts about the training run.

  Returns:
    The report, and the Outputs of validation and of `split`.
  """
  val = outputs(model, configs["validation"])
  ev = val if split == "validation" else outputs(model, configs[split])
  report = {
    "validation": metrics.summarize(*val[:2], *val[:2], seed=seed, groups=val.datasets),
    split: metrics.summarize(*val[:2], *ev[:2], seed=seed, groups=ev.datasets),
    "protocol": {
      "thresholds_from": describe_input(configs["validation"], val),
      "evaluated": describe_input(configs[split], ev),
    },
  }
  if run_info:
    report["run"] = run_info
  result = report[split]
  logging.info(
    "%s AUC %.3f (95%% CI %.3f-%.3f); triage point: sensitivity %.3f, specificity %.3f;"
    " ECE %.3f (N=%d)",
    split,
    result["auc"],
    *result["auc_ci95"],
    result["operating_points"]["triage"]["sensitivity"],
    result["operating_points"]["triage"]["specificity"],
    result["calibration"]["ece"],
    result["n"],
  )
  tf.io.gfile.makedirs(model_dir)
  written = [
    os.path.join(model_dir, "metrics.json"),
    os.path.join(model_dir, f"scores_{split}.csv"),
  ]
  write_json(written[0], report)
  write_scores(written[1], ev)
  pngs = plot_curves(val[:2], ev[:2], result, split)
  for name in ("roc", "reliability"):
    if name in pngs:  # Only with matplotlib.
      written.append(os.path.join(model_dir, f"{name}.png"))
      with tf.io.gfile.GFile(written[-1], "wb") as f:
        f.write(pngs[name])
  with tf.summary.create_file_writer(os.path.join(log_dir, "evaluation")).as_default():
    tf.summary.scalar(f"{split}/auc", result["auc"], step=0)
    tf.summary.scalar(f"{split}/ece", result["calibration"]["ece"], step=0)
    tf.summary.scalar("validation/ece", report["validation"]["calibration"]["ece"], step=0)
    for name, point in result["operating_points"].items():
      for key in ("sensitivity", "specificity", "ppv", "npv"):
        tf.summary.scalar(f"{split}/{name}/{key}", point[key] or 0.0, step=0)
    for name, png in pngs.items():
      tag = "reliability_diagram" if name == "reliability" else f"{name}_curve"
      tf.summary.image(f"{split}/{tag}", tf.io.decode_png(png, channels=3)[None], step=0)
  for path in [*written, os.path.join(log_dir, "evaluation")]:
    logging.info("Wrote %s", path)  # What was written, not what might have been.
  return report, val, ev


SCORE_COLUMNS = ("dataset", "filename", "label", "score")


def write_scores(path: str, cases: Outputs) -> None:
  """Writes each case's dataset, file name, label and score as CSV (local or gs://)."""
  with tf.io.gfile.GFile(path, "w") as f:
    writer = csv.writer(f)
    writer.writerow(SCORE_COLUMNS)
    for row in zip(cases.datasets, cases.filenames, cases.labels, cases.scores, strict=True):
      writer.writerow([row[0], row[1], int(row[2]), repr(float(row[3]))])


def read_scores(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(labels, scores, datasets) from a `write_scores` file."""
  with tf.io.gfile.GFile(path) as f:
    rows = list(csv.DictReader(f))
  return (
    np.array([int(r["label"]) for r in rows], int),
    np.array([float(r["score"]) for r in rows], float),
    np.array([r["dataset"] for r in rows], str),
  )


def cross_validation_report(fold_reports: dict, labels, scores, datasets, seed: int = 0) -> dict:
  """A cross-validation's summary: per fold, mean +/- sd, and pooled out of fold.

  Args:
    fold_reports: {'fold_<k>': that fold's summary on its held-out fold}.
    labels: every case's label, all held-out folds together.
    scores: each case's score from the fold model that did not train on it.
    datasets: each case's dataset (per-dataset figures when there are several).
    seed: the bootstrap's seed.

  Returns:
    {'folds', 'fold_aucs', 'mean', 'sd', 'pooled'}, JSON-ready.
  """
  reports = list(fold_reports.values())
  return {
    "folds": fold_reports,
    **metrics.cross_validation_summary([r["auc"] for r in reports]),
    "pooled": metrics.pooled_out_of_fold(reports, labels, scores, seed=seed, groups=datasets),
  }


def describe_cross_validation(summary: dict) -> str:
  """One paragraph on a cross-validation: per-fold AUCs, mean +/- sd, pooled AUC with its CI.

  Args:
    summary: `cross_validation_report`'s output.

  Returns:
    Lines for the user.
  """
  pooled = summary["pooled"]
  lines = [
    f"{len(summary['fold_aucs'])}-fold cross-validation AUC {summary['mean']:.3f} +/-"
    f" {summary['sd']:.3f} (per fold: {', '.join(f'{a:.3f}' for a in summary['fold_aucs'])}).",
    f"  Pooled out-of-fold: {_auc_text(pooled)}; every image scored once, by the model that"
    " did not train on it.",
  ]
  for name, group in pooled.get("by_group", {}).items():
    lines.append(f"    {name}: {_auc_text(group)}")
  return "\n".join(lines)


def lung_energy(export_dir: str, config: input_pipeline.InputConfig) -> dict | None:
  """Grad-CAM's proportional energy inside the lung mask, over the split's abnormal images.

  Args:
    export_dir: the run's export (its `explain` signature gives heat map and image).
    config: the evaluated dataset and split; only a dataset with a `lung_mask`
      feature (Montgomery) is measured.

  Returns:
    `metrics.proportional_energy`'s summary, or None without masks or an export.
  """
  names = input_pipeline.dataset_names(config.dataset)
  if len(names) != 1 or not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    return None
  import tensorflow_datasets as tfds

  builder = tfds.builder(names[0], data_dir=config.data_dir)
  if "lung_mask" not in builder.info.features:
    return None
  explain = tf.saved_model.load(export_dir).signatures["explain"]
  split = "+".join(input_pipeline.SPLITS) if config.split == "all" else config.split
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  heatmaps, masks = [], []
  for example in ds.filter(lambda ex: ex["label"] == 1):
    heatmap = explain(image_bytes=example["image"][None])["heatmap"][0]
    # The mask, padded and resized exactly as the image was.
    mask = geometry.resize_to_square(example["lung_mask"] * 255, heatmap.shape[0])
    heatmaps.append(heatmap)
    masks.append(mask[..., 0] >= 128)
  if not heatmaps:
    return None
  return metrics.proportional_energy(tf.stack(heatmaps), tf.stack(masks))


def describe_report(report: dict, key: str) -> str:
  """A few lines on one evaluation: what was evaluated, AUC with CI and N, the triage point.

  Args:
    report: `report_split`'s report.
    key: the evaluated split's key in it.

  Returns:
    Lines for the user.
  """
  result, protocol = report[key], report["protocol"]
  triage = result["operating_points"]["triage"]
  energy = result.get("grad_cam_lung_energy")
  return "\n".join(
    [
      f"{_input_text(protocol['evaluated'])}: {_auc_text(result)}.",
      *describe_by_group(result),
      f"  At the triage threshold {triage['threshold']:.4f}, chosen on"
      f" {_input_text(protocol['thresholds_from'])}: sensitivity {triage['sensitivity']:.3f},"
      f" specificity {triage['specificity']:.3f} (tp {triage['tp']}, fp {triage['fp']},"
      f" tn {triage['tn']}, fn {triage['fn']}).",
      *(
        [
          f"  Grad-CAM energy inside the lung masks: {energy['mean']:.3f} +/- {energy['sd']:.3f}"
          f" (mean +/- sd over {energy['n']} abnormal images; the masks cover"
          f" {energy['mask_share']:.3f} of the frame, what a uniform heat map scores)."
        ]
        if energy and energy["n"]
        else []
      ),
      *(
        [f"  {energy['n_all_zero']} abnormal image(s) had an all-zero heat map, left out."]
        if energy and energy["n_all_zero"]
        else []
      ),
    ]
  )


def _input_text(described: dict) -> str:
  folds = f" folds {described['folds']} of {described['num_folds']}" if "folds" in described else ""
  return f"{described['dataset']} {described['split']}{folds} (N={described['n']})"


def _auc_text(summary: dict) -> str:
  low, high = summary["auc_ci95"]
  return (
    f"AUC {summary['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) on {summary['n']} images"
    f" ({summary['n_positive']} abnormal); ECE {summary['calibration']['ece']:.3f}"
  )


def describe_by_group(summary: dict) -> list[str]:
  """Per-dataset lines of a summary with several datasets (none otherwise).

  Args:
    summary: a `metrics.summarize` output.

  Returns:
    One line per dataset: AUC, CI, N, and the triage point's rates.
  """
  lines = []
  for name, group in summary.get("by_group", {}).items():
    triage = group["operating_points"]["triage"]
    lines.append(
      f"    {name}: {_auc_text(group)}; triage point: sensitivity"
      f" {triage['sensitivity']:.3f}, specificity {triage['specificity']:.3f}"
    )
  return lines


def evaluation_configs(splits: dict) -> dict:
  """The training run's split configs, for one plain pass each (no augmentation)."""
  return {
    name: dataclasses.replace(
      c, training=False, repeat=False, drop_remainder=False, cache=False, global_batch_size=32
    )
    for name, c in splits.items()
  }
