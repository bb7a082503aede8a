"""TFDS's own builder test on the embedded sample, for each config."""

import tensorflow_datasets as tfds

from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder

# The sample's 32 normal + 32 abnormal stems, split by hash (see the README).
_SPLITS = {"train": 45, "validation": 9, "test": 10}


class ShenzhenCxrOriginalTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = shenzhen_cxr_dataset_builder.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["original"]
  SPLITS = _SPLITS
  SKIP_CHECKSUMS = True  # The NLM archive's checksum is not recorded yet.


class ShenzhenCxr512Test(ShenzhenCxrOriginalTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["512"]


if __name__ == "__main__":
  tfds.testing.test_main()
