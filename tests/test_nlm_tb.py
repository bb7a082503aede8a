"""What both NLM builders share (nlm_tb): the download path, tested through TFDS's own hooks."""

import os

import pytest
import tensorflow_datasets as tfds

import txr_data
from txr_data.montgomery_cxr import montgomery_cxr_dataset_builder as mcb
from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as scb


@pytest.mark.parametrize(
  "name,url,sample,train",
  [
    ("shenzhen_cxr/512", scb.Builder.URL, txr_data.SAMPLE_DIR, 45),
    ("montgomery_cxr/512", mcb.Builder.URL, txr_data.MONTGOMERY_SAMPLE_DIR, 15),
  ],
)
def test_download_path_uses_download_and_extract(tmp_path, monkeypatch, name, url, sample, train):
  """With no manual dir, the archive is fetched through the download manager."""
  urls = []

  def fake_download_and_extract(self, url):
    urls.append(url)
    return tfds.core.Path(sample)

  monkeypatch.setattr(
    tfds.download.DownloadManager, "download_and_extract", fake_download_and_extract
  )
  builder = tfds.builder(name, data_dir=os.fspath(tmp_path))
  builder.download_and_prepare()
  assert urls == [url]
  assert builder.info.splits["train"].num_examples == train
