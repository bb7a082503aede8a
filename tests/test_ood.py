"""The out-of-distribution detector's numbers, without a model."""

import numpy as np
import pytest
import tensorflow as tf

from txr_model import ood


def test_mahalanobis_threshold_flags_about_one_percent_and_far_points():
  rng = np.random.default_rng(0)
  train, val = rng.normal(size=(400, 8)), rng.normal(size=(2000, 8))
  detector = ood.fit(train, val)
  flagged = ood.mahalanobis(val, detector) > detector["threshold"]
  assert abs(flagged.mean() - (1 - ood.QUANTILE)) < 0.005
  far = np.full((1, 8), 6.0)
  assert ood.mahalanobis(far, detector)[0] > 2 * detector["threshold"]
  # The graph version (used in the export) gives the same distances.
  tf_distances = ood.mahalanobis(tf.constant(val[:5], tf.float32), detector).numpy()
  np.testing.assert_allclose(tf_distances, ood.mahalanobis(val[:5], detector), rtol=1e-4)


def test_more_features_than_images_still_gives_a_detector():
  rng = np.random.default_rng(1)
  detector = ood.fit(rng.normal(size=(20, 64)), rng.normal(size=(10, 64)))
  assert np.isfinite(detector["precision"]).all() and np.isfinite(detector["threshold"])


def test_gray_images_have_no_colour_and_photographs_do():
  gray = tf.tile(tf.random.uniform([16, 16, 1], 0, 255), [1, 1, 3])
  assert float(ood.colourfulness(gray)) < 1e-3
  rng = np.random.default_rng(2)
  photo = tf.constant(rng.uniform(0, 255, (16, 16, 3)), tf.float32)
  assert float(ood.colourfulness(photo)) > ood.RULES["max_colourfulness"]


def test_one_odd_validation_image_does_not_set_the_threshold():
  rng = np.random.default_rng(3)
  train, val = rng.normal(size=(400, 8)), rng.normal(size=(64, 8))
  odd = np.vstack([val[:-1], np.full((1, 8), 30.0)])  # One far validation image of 64.
  clean, with_odd = ood.fit(train, val), ood.fit(train, odd)
  # The empirical 0.99 quantile of 64 validation distances alone is about their maximum.
  assert with_odd["threshold"] == pytest.approx(clean["threshold"], rel=0.1)
  fresh = rng.normal(size=(20000, 8))
  flagged = ood.mahalanobis(fresh, with_odd) > with_odd["threshold"]
  assert 0.003 < flagged.mean() < 0.03
  assert ood.mahalanobis(np.full((1, 8), 3.0), with_odd)[0] > with_odd["threshold"]


def test_heavy_tailed_distances_keep_the_false_flag_rate_near_one_percent():
  # Radiographs' feature distances have a heavy tail: a normal fitted to the
  # bulk of 64 validation distances flagged 8% of the demo's held-out films.
  rng = np.random.default_rng(4)

  def films(n):  # Multivariate t with 3 degrees of freedom.
    return rng.normal(size=(n, 8)) / np.sqrt(rng.chisquare(3, size=(n, 1)) / 3)

  detector = ood.fit(films(400), films(64))
  flagged = ood.mahalanobis(films(20000), detector) > detector["threshold"]
  assert 0.003 < flagged.mean() < 0.03, flagged.mean()


def test_with_many_more_features_than_images_new_films_are_flagged_about_one_percent():
  """The demo's proportions (484 training images, 64 validation, 2048 features), scaled down.

  In-sample distances are far smaller than a new image's here: the old threshold on them
  flagged 7-21% of fresh draws from the training distribution.
  """
  rng = np.random.default_rng(5)
  scale = 1 / np.sqrt(np.arange(1, 513))  # a decaying spectrum, as pooled features have

  def films(n):
    return rng.normal(size=(n, 512)) * scale

  detector = ood.fit(films(120), films(16))
  flagged = ood.mahalanobis(films(4000), detector) > detector["threshold"]
  assert 0.002 < flagged.mean() < 0.03, flagged.mean()  # neither most nor none


def test_held_out_distances_are_those_of_a_detector_fitted_on_the_rest():
  rng = np.random.default_rng(6)
  fitted, rows = rng.normal(size=(30, 50)), rng.normal(size=(7, 50))
  explicit = ood.mahalanobis(rows, ood.fit(fitted, rows[:2]))  # mean and precision of `fitted`
  np.testing.assert_allclose(ood.held_out_distances(fitted, rows, 0.1), explicit, rtol=1e-6)
