"""TFDS's own builder test on the embedded sample, for each config."""

import tensorflow_datasets as tfds

from txr_data.montgomery_cxr import montgomery_cxr_dataset_builder

# The sample's 10 normal + 10 abnormal real file names, split by hash (see the README).
_SPLITS = {"train": 15, "validation": 3, "test": 2}


class MontgomeryCxrOriginalTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = montgomery_cxr_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["original"]
  SPLITS = _SPLITS  # The sample is read as a manual dir: nothing is downloaded.


class MontgomeryCxr512Test(MontgomeryCxrOriginalTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["512"]


if __name__ == "__main__":
  tfds.testing.test_main()
