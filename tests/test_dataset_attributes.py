"""What a dataset says of each image: subgroups joined by file name, and each split's counts."""

import pytest
import tensorflow_datasets as tfds

from txr_model import dataset_attributes
from txr_model import input_pipeline


@pytest.fixture(scope="module")
def test_split(built_data_dir):
  return input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, 75, 4, split="test")


def test_attributes_are_joined_by_file_name_whatever_the_order(test_split):
  builder = tfds.builder("shenzhen_cxr/512", data_dir=test_split.data_dir)
  sexes = builder.info.features["sex"].names
  truth = {
    ex["image/filename"].decode(): (sexes[ex["sex"]], int(ex["age"]))
    for ex in tfds.as_numpy(builder.as_dataset(split="test"))
  }
  names = sorted(truth, reverse=True)  # not the read order
  groups = dataset_attributes.attributes(
    ["shenzhen_cxr/512"] * len(names), names, test_split.data_dir, "0-29,30+"
  )
  assert set(groups) == {"sex", "age"}  # one dataset: no site
  for i, name in enumerate(names):
    sex, age = truth[name]
    assert groups["sex"][i] == sex
    assert groups["age"][i] == ("unknown" if age < 0 else "0-29" if age < 30 else "30+")
  assert {"0-29", "30+"} <= set(groups["age"])  # the sample's ages fall on both sides
  counts = dataset_attributes.split_counts({"test": test_split}, "0-29,30+")["test"]
  assert counts["n"] == len(truth) and sum(counts["label"].values()) == len(truth)
  assert counts["sex"] == {
    sex: sum(s == sex for s, _ in truth.values()) for sex in {s for s, _ in truth.values()}
  }
  with pytest.raises(ValueError, match="no image CHNCXR_9999_0.png"):
    dataset_attributes.attributes(["shenzhen_cxr/512"], ["CHNCXR_9999_0.png"], test_split.data_dir)
