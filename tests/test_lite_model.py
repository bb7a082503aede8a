"""A LiteRT variant's pieces: the detector's scores and file, loading checks (no TensorFlow)."""

import io

import numpy as np

from txr_lite import contract
from txr_lite import lite_model


def test_detector_scores_are_mahalanobis_distance_over_the_threshold():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(5, 3))
  mean, a = rng.normal(size=3), rng.normal(size=(3, 3))
  precision = a @ a.T + np.eye(3)
  detector = lite_model.Detector(mean, precision, threshold=2.0)
  d = features - mean
  expected = np.sqrt(np.einsum("ij,jk,ik->i", d, precision, d)) / 2.0
  np.testing.assert_allclose(detector.scores(features), expected)


def test_the_detector_file_round_trips_in_float32():
  stats = {"mean": np.arange(3.0), "precision": np.eye(3) * 2, "threshold": 9.0}
  data = lite_model.detector_bytes(stats)
  with np.load(io.BytesIO(data)) as back:
    assert sorted(back) == ["mean", "precision"] and back["mean"].dtype == np.float32
    np.testing.assert_array_equal(back["precision"], np.eye(3) * 2)
  assert contract.digest(data) == contract.digest(lite_model.detector_bytes(stats))  # stable
