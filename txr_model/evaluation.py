"""Scoring a split and building its report: AUC, operating points, calibration, protocol.

Operating points (Youden's J, and the WHO triage point: the highest
specificity with sensitivity >= 0.90) are chosen on the validation split and
only applied to the evaluated split, so its sensitivity and specificity are
honest estimates. The report says which dataset and split chose them and
which were evaluated (they differ in a cross-site evaluation). The evaluated
split's figures are also given per subgroup (sex, age band, site, and any other
class or boolean feature of the dataset; metrics.subgroups), at the same
thresholds. report_files.py writes the report, plots.py draws its curves and
report_text.py words it for people.
"""

import collections
import dataclasses
import os
from typing import NamedTuple
import weakref

from absl import logging
import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from txr_data import geometry
from txr_model import dataset_attributes
from txr_model import input_pipeline
from txr_model import metrics
from txr_model import model as model_lib
from txr_model import report_files
from txr_model import report_text
from txr_model import run_dir

# Images per batch when scoring a split: one device, one plain pass (evaluation_configs).
BATCH_SIZE = 32


class Outputs(NamedTuple):
  """A split's cases in dataset order: what the model said about each."""

  labels: np.ndarray  # 0/1
  scores: np.ndarray  # probability of abnormal
  features: np.ndarray  # pooled base features
  datasets: np.ndarray  # the TFDS name/config each case came from
  filenames: np.ndarray


_SCORERS = weakref.WeakKeyDictionary()  # model -> its float32 copy's (score, pooled features)


def _scorer(model: keras.Model):
  """The float32 model the export serves, with its pooled features as a second output.

  Thresholds and the OOD detector are fitted on these scores and features, so
  they are the served model's, whatever the training precision. Built once per
  model, and traced once for any batch size: Keras's `predict_on_batch` traced
  it again for each split's last, smaller batch (2.6 s for InceptionV3 here).
  """
  if model not in _SCORERS:
    served = model_lib.as_float32(model)
    net = keras.Model(served.input, [served.output, served.get_layer(model_lib.POOL).output])
    images = tf.TensorSpec([None, *served.input_shape[1:]], served.input.dtype)
    _SCORERS[model] = tf.function(lambda x: net(x, training=False), input_signature=[images])
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
    score, feature = scorer(images)
    scores.append(score.numpy()[:, 0])
    features.append(feature.numpy())
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


class Evaluation(NamedTuple):
  """One split evaluated with thresholds from validation: the report and the cases behind it."""

  report: dict  # {'validation', <split>, 'protocol'[, 'run']}, JSON-ready
  validation: Outputs  # the cases that chose the thresholds
  evaluated: Outputs  # the evaluated split's cases


def evaluate_split(
  model, configs, split, seed, run_info=None, age_bands=metrics.AGE_BANDS
) -> Evaluation:
  """Evaluates configs[split] with thresholds from configs['validation'].

  With several datasets, each summary has a "by_group" entry per dataset. The
  evaluated split's summary has "subgroups" (see `attributes`).
  report_files.write_report writes the result.

  Args:
    model: the Keras model.
    configs: InputConfigs: 'validation' chooses the thresholds; `split` is
      evaluated (the two may read different datasets).
    split: the key of the evaluated config, also its name in the report.
    seed: the bootstrap's seed.
    run_info: facts about the training run, put in the report under "run".
    age_bands: the age bands of the subgroups (--age_bands).

  Returns:
    The report, and the Outputs of validation and of `split`.
  """
  val = outputs(model, configs["validation"])
  ev = val if split == "validation" else outputs(model, configs[split])
  groups = dataset_attributes.attributes(
    ev.datasets, ev.filenames, configs[split].data_dir, age_bands
  )
  report = {
    "validation": _summarize(val, val, seed),
    split: _summarize(val, ev, seed, groups),
    "protocol": {
      "thresholds_from": describe_input(configs["validation"], val),
      "evaluated": describe_input(configs[split], ev),
    },
  }
  if run_info:
    report["run"] = run_info
  logging.info("%s", report_text.headline(report[split], split))
  return Evaluation(report, val, ev)


def _summarize(val: Outputs, ev: Outputs, seed: int, groups: dict | None = None) -> dict:
  """`ev`'s summary at thresholds chosen on `val`, per dataset too, and per subgroup."""
  return metrics.summarize(
    val.labels, val.scores, ev.labels, ev.scores, seed=seed, groups=ev.datasets, attributes=groups
  )


def cross_validation_report(
  fold_dirs: list[str],
  fold_reports: dict,
  data_dir: str,
  seed: int = 0,
  age_bands: str = metrics.AGE_BANDS,
) -> dict:
  """A cross-validation's summary: per fold, mean +/- sd, and pooled out of fold.

  The one way txr pools (txr-train --folds and txr-evaluate alike): every
  image once, read back from each fold's test scores file, scored by the
  fold model that did not train on it, at its fold's thresholds.

  Args:
    fold_dirs: each fold's folder holding its `scores_test.csv`, in fold order.
    fold_reports: {'fold_<k>': that fold's summary on its held-out fold}.
    data_dir: where the datasets are (for each image's sex and age).
    seed: the bootstrap's seed.
    age_bands: the subgroups' age bands.

  Returns:
    {'folds', 'fold_aucs', 'mean', 'sd', 'pooled'}, JSON-ready.
  """
  scored = [report_files.read_scores(run_dir.scores_path(d, "test")) for d in fold_dirs]
  labels, scores, datasets, filenames = (np.concatenate(c) for c in zip(*scored, strict=True))
  reports = list(fold_reports.values())
  return {
    "folds": fold_reports,
    **metrics.cross_validation_summary([r["auc"] for r in reports]),
    "pooled": metrics.pooled_out_of_fold(
      reports,
      labels,
      scores,
      seed=seed,
      groups=datasets,
      attributes=dataset_attributes.attributes(datasets, filenames, data_dir, age_bands),
    ),
  }


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


def evaluation_configs(splits: dict) -> dict:
  """The training run's split configs, for one plain pass each (no augmentation)."""
  return {
    name: dataclasses.replace(
      c,
      training=False,
      repeat=False,
      drop_remainder=False,
      cache=False,
      global_batch_size=BATCH_SIZE,
    )
    for name, c in splits.items()
  }
