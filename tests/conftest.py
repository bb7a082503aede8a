"""Shared fixtures: the embedded sample and small PNG writers."""

import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import txr_data  # noqa: E402  (registers the builders)

SAMPLE_ROOT = os.path.join(txr_data.SAMPLE_DIR, "ChinaSet_AllFiles")


@pytest.fixture
def sample_copy(tmp_path):
  """A writable copy of the sample's `ChinaSet_AllFiles` tree under tmp_path/manual."""
  dst = tmp_path / "manual" / "ChinaSet_AllFiles"
  shutil.copytree(SAMPLE_ROOT, dst)
  return dst


@pytest.fixture(scope="session")
def built_data_dir(tmp_path_factory):
  """A data_dir holding shenzhen_cxr/512 built from the embedded sample."""
  import tensorflow_datasets as tfds

  data_dir = tmp_path_factory.mktemp("tfds")
  tfds.builder("shenzhen_cxr/512", data_dir=os.fspath(data_dir)).download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=txr_data.SAMPLE_DIR)
  )
  return os.fspath(data_dir)
