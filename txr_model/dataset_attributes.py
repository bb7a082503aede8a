"""What a dataset says of each image besides its pixels: its subgroups, and each split's counts.

The one place txr reads a dataset's records for their attributes (sex, age,
site, any other class or boolean feature), joined to images by dataset and
file name; evaluation.py scores and reports, and takes its groups from here.
"""

import numpy as np
import tensorflow_datasets as tfds

from txr_data import nlm_tb
from txr_model import input_pipeline
from txr_model import metrics

# Text features that name a group (local_cxr's `site`: a programme's clinics).
TEXT_GROUPS = ("site",)


def _grouping_features(features) -> dict:
  """{name: feature} of a dataset's features that group its images: age, classes, booleans, site."""
  out = {}
  for name, feature in features.items():
    is_class = isinstance(feature, tfds.features.ClassLabel)
    is_scalar = feature.shape == () and (name == "age" or feature.np_dtype == np.bool_)
    is_text = name in TEXT_GROUPS and isinstance(feature, tfds.features.Text)
    if name != "label" and (is_class or is_scalar or is_text):
      out[name] = feature
  return out


def attributes(datasets, filenames, data_dir: str, age_bands: str = metrics.AGE_BANDS) -> dict:
  """Each case's subgroup per attribute, read from its dataset and joined by file name.

  The attributes: 'sex' and any other class feature (its class names), 'age'
  (its band, `metrics.parse_age_bands`; 'unknown' where not recorded), any
  boolean feature ('true'/'false'), and 'site': the dataset when the cases
  come from several, else a dataset's own `site` text (local_cxr's clinics;
  'unknown' where empty). A dataset without an attribute puts its cases in
  'unknown'. Every split of each dataset is read (a cross-validation fold
  mixes them), images left undecoded.

  Args:
    datasets: each case's dataset (TFDS name/config).
    filenames: each case's file name.
    data_dir: their datasets' TFDS data dir.
    age_bands: --age_bands.

  Returns:
    {attribute: an array of group names, one per case, in the order given}.
  """
  bands = metrics.parse_age_bands(age_bands)
  found = {}  # (dataset, file name) -> {attribute: group}
  datasets = np.asarray(datasets, str)
  names = sorted(set(datasets.tolist()))
  for name in names:
    builder = tfds.builder(name, data_dir=data_dir)
    grouping = _grouping_features(builder.info.features)
    ds = builder.as_dataset(
      split="+".join(builder.info.splits),
      decoders=tfds.decode.PartialDecoding(
        {"image/filename": True, **dict.fromkeys(grouping, True)}
      ),
    )
    for ex in ds.as_numpy_iterator():
      values = {}
      for feature, spec in grouping.items():
        value = ex[feature]
        if feature == "age":
          values[feature] = str(metrics.age_bands_of([value], bands)[0])
        elif isinstance(spec, tfds.features.ClassLabel):
          values[feature] = spec.int2str(int(value))
        elif isinstance(spec, tfds.features.Text):
          values[feature] = value.decode() or metrics.UNKNOWN
        else:
          values[feature] = str(bool(value)).lower()
      found[(name, ex["image/filename"].decode())] = values
  keys = list(zip(datasets.tolist(), np.asarray(filenames, str).tolist(), strict=True))
  missing = [key for key in keys if key not in found]
  if missing:
    raise ValueError(f"{missing[0][0]}: no image {missing[0][1]} in {data_dir}")
  out = {
    attribute: np.array([found[key].get(attribute, metrics.UNKNOWN) for key in keys], str)
    for attribute in sorted({a for key in keys for a in found[key]})
  }
  if len(names) > 1:
    out["site"] = datasets
  return out


def split_counts(configs: dict, age_bands: str = metrics.AGE_BANDS) -> dict:
  """Each split's images by label, sex and age band: what a model card says it learnt from.

  Args:
    configs: {split name: InputConfig}, as the run read them.
    age_bands: --age_bands.

  Returns:
    {split: {'n', 'label': {name: count}, <attribute>: {group: count}}}.
  """
  rows = {}
  for split, config in configs.items():
    ds = input_pipeline.examples(config, config.split).map(
      lambda ex: (ex["label"], ex["dataset"], ex["image/filename"])
    )
    rows[split] = [(int(y), d.decode(), f.decode()) for y, d, f in ds.as_numpy_iterator()]
  every = [row for split_rows in rows.values() for row in split_rows]
  data_dir = next(iter(configs.values())).data_dir  # The run's splits share it.
  groups = attributes([d for _, d, _ in every], [f for _, _, f in every], data_dir, age_bands)
  out, start = {}, 0
  for split, split_rows in rows.items():
    labels = np.array([y for y, _, _ in split_rows], int)
    counts = {"n": len(split_rows), "label": _count(np.array(nlm_tb.LABELS)[labels])}
    for attribute, names in groups.items():
      counts[attribute] = _count(names[start : start + len(split_rows)])
    out[split] = counts
    start += len(split_rows)
  return out


def _count(names) -> dict:
  values, counts = np.unique(np.asarray(names, str), return_counts=True)
  return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
