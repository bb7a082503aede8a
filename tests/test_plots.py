"""The curve images: PNGs from matplotlib, none without it, and their TensorBoard images."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from txr_model import evaluation
from txr_model import metrics
from txr_model import plots

pytest.importorskip("matplotlib")


def _cases(seed, n=40):
  rng = np.random.default_rng(seed)
  labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
  scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * labels)))
  names = np.array([f"{i}.png" for i in range(n)])
  return evaluation.Outputs(labels, scores, np.zeros((n, 0)), np.full(n, "a/512"), names)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_each_curve_is_a_png(split):
  val, ev = _cases(0), _cases(1)
  result = metrics.summarize(val.labels, val.scores, ev.labels, ev.scores, n_resamples=10)
  pngs = plots.plot_curves(val, ev, result, split)
  assert set(pngs) == {"roc", "pr", "reliability"}
  for png in pngs.values():
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_no_curves_without_matplotlib(monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
  val = _cases(0)
  result = metrics.summarize(val.labels, val.scores, val.labels, val.scores, n_resamples=10)
  assert plots.plot_curves(val, val, result, "validation") == {}


def test_summarize_curves_writes_one_image_per_curve(tmp_path):
  png = tf.io.encode_png(tf.zeros([4, 6, 3], tf.uint8)).numpy()
  with tf.summary.create_file_writer(str(tmp_path)).as_default():
    plots.summarize_curves({"roc": png, "reliability": png}, "test")
  tags = {
    value.tag
    for path in tmp_path.glob("events.out.tfevents.*")
    for event in tf.compat.v1.train.summary_iterator(str(path))
    for value in event.summary.value
  }
  assert tags == {"test/roc_curve", "test/reliability_diagram"}
