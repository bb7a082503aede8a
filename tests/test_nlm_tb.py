"""What both NLM builders share (nlm_tb): the download path, tested through TFDS's own hooks."""

import logging
import os
import re

import pytest
import tensorflow_datasets as tfds

import txr_data
from txr_data import nlm_tb
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


@pytest.mark.parametrize(
  "builder,readings",
  [
    (scb, os.path.join(txr_data.SAMPLE_DIR, "ChinaSet_AllFiles", "ClinicalReadings")),
    (mcb, os.path.join(txr_data.MONTGOMERY_SAMPLE_DIR, "MontgomerySet", "ClinicalReadings")),
  ],
)
def test_sex_and_age_parse_in_every_reading_format_of_the_sample(builder, readings):
  """The sample's readings use the archives' formats: only a sex written 'O' is unknown."""
  names = sorted(os.listdir(readings))
  assert names
  for name in names:
    with open(os.path.join(readings, name), "rb") as f:
      text = nlm_tb.decode_reading(f.read())
    reading = builder.parse_reading(text)
    # 'O' (other) is how both archives write a sex not recorded; Shenzhen's 'O' line has no age.
    other = re.search(r"^(?:Patient's Sex:\s*)?O\s*$", text, re.M | re.I)
    assert (reading.sex == "unknown") == bool(other), (name, text)
    if text.strip().splitlines()[0].strip() != "O":
      assert 0 <= reading.age <= nlm_tb.MAX_AGE, (name, text)


def test_the_build_log_counts_unknown_sex_and_age_per_split(tmp_path, caplog):
  # On absl's logger: another test in the same process may have set its verbosity.
  caplog.set_level(logging.INFO, logger="absl")
  builder = tfds.builder("shenzhen_cxr/512", data_dir=os.fspath(tmp_path))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=txr_data.SAMPLE_DIR)
  )
  sexes = builder.info.features["sex"].names
  for split in ("train", "validation", "test"):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    sex_unknown = sum(sexes[ex["sex"]] == "unknown" for ex in examples)
    age_unknown = sum(ex["age"] < 0 for ex in examples)
    logged = f"{split}: {len(examples)} images; sex unknown for {sex_unknown}, age unknown for"
    assert f"{logged} {age_unknown} (" in caplog.text, caplog.text[-2000:]
  assert sex_unknown > 0  # the sample has readings that do not say
