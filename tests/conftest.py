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
