"""Screening metrics against small hand-computed cases (pure numpy, no tensorflow)."""

import json
import math
import time

import numpy as np
import pytest

from txr_model import metrics

# Hand case: positives {0.4, 0.7, 0.9}, negatives {0.1, 0.3, 0.6}.
HAND_LABELS = [0, 0, 0, 1, 1, 1]
HAND_SCORES = [0.1, 0.3, 0.6, 0.4, 0.7, 0.9]

# Tie across classes: 0.5 is both a positive and a negative, 0.2 too.
TIE_LABELS = [0, 1, 0, 1, 1]
TIE_SCORES = [0.2, 0.5, 0.5, 0.8, 0.2]


def _pairwise_auc(labels, scores):
  """Brute-force Mann-Whitney over all (positive, negative) pairs, ties 0.5."""
  labels = np.asarray(labels, bool)
  scores = np.asarray(scores, float)
  pos, neg = scores[labels], scores[~labels]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _separable_ish(n, seed):
  rng = np.random.default_rng(seed)
  labels = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
  logits = rng.normal(size=n) + 1.5 * labels
  return labels, 1.0 / (1.0 + np.exp(-logits))


# --- AUC ---------------------------------------------------------------------------------------


def test_auc_perfect_inverted_and_all_ties():
  labels = [0, 0, 1, 1]
  assert metrics.roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
  assert metrics.roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
  assert metrics.roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_hand_cases():
  # 0.35 beats 0.1 only; 0.8 beats both negatives: 3 of 4 pairs.
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
  # 0.4 beats 2, 0.7 beats 3, 0.9 beats 3: 8 of 9 pairs.
  assert metrics.roc_auc(HAND_LABELS, HAND_SCORES) == pytest.approx(8 / 9)
  # Pairs: 0.5 -> 1 + 0.5 (tie), 0.8 -> 2, 0.2 -> 0.5 (tie) + 0: 4 of 6.
  assert metrics.roc_auc(TIE_LABELS, TIE_SCORES) == pytest.approx(2 / 3)


def test_auc_one_class_is_nan():
  assert math.isnan(metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
  assert math.isnan(metrics.roc_auc([0, 0], [0.2, 0.5]))
  assert math.isnan(metrics.roc_auc([], []))


def test_auc_matches_pairwise_and_trapezoid_on_random_ties():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, size=300)
  scores = rng.integers(0, 20, size=300) / 20.0  # heavy ties
  fpr, tpr, _ = metrics.roc_curve(labels, scores)
  trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
  auc = metrics.roc_auc(labels, scores)
  assert auc == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
  assert auc == pytest.approx(trapezoid, abs=1e-12)


def test_bad_inputs_raise():
  with pytest.raises(ValueError):
    metrics.roc_auc([0, 1], [0.5])
  with pytest.raises(ValueError):
    metrics.roc_auc([0, 2], [0.1, 0.5])
  with pytest.raises(ValueError):
    metrics.roc_auc([0, 1], [0.1, float("nan")])


# --- Curves ------------------------------------------------------------------------------------


def test_roc_curve_by_hand_with_ties():
  # Descending: 0.8(+) | 0.5(+), 0.5(-) | 0.2(-), 0.2(+); P = 3, N = 2.
  fpr, tpr, thresholds = metrics.roc_curve(TIE_LABELS, TIE_SCORES)
  np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.5, 0.2])
  np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_roc_curve_one_class_gives_nan_rate():
  fpr, tpr, thresholds = metrics.roc_curve([1, 1], [0.3, 0.6])
  np.testing.assert_array_equal(thresholds, [np.inf, 0.6, 0.3])
  np.testing.assert_allclose(tpr, [0, 0.5, 1])
  assert np.isnan(fpr).all()


def test_pr_curve_by_hand():
  precision, recall, thresholds = metrics.pr_curve(TIE_LABELS, TIE_SCORES)
  np.testing.assert_array_equal(thresholds, [0.8, 0.5, 0.2])
  np.testing.assert_allclose(precision, [1, 2 / 3, 3 / 5])
  np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 1])


# --- Confusion and rates -----------------------------------------------------------------------


def test_confusion_and_rates_by_hand():
  labels = [1, 1, 0, 0, 1]
  scores = [0.9, 0.4, 0.6, 0.2, 0.5]
  # >= 0.5 is positive: 0.9 (+) tp, 0.6 (-) fp, 0.5 (+) tp on the boundary; 0.4 (+) fn, 0.2 tn.
  conf = metrics.confusion(labels, scores, 0.5)
  assert conf == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
  assert all(type(v) is int for v in conf.values())
  r = metrics.rates(conf)
  assert r == pytest.approx(
    {"accuracy": 3 / 5, "sensitivity": 2 / 3, "specificity": 1 / 2, "ppv": 2 / 3, "npv": 1 / 2}
  )


def test_rates_nan_denominator():
  conf = metrics.confusion([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.2, 0.5], 0.95)
  assert conf == {"tp": 0, "fp": 0, "tn": 2, "fn": 3}
  r = metrics.rates(conf)
  assert math.isnan(r["ppv"])  # nothing called positive
  assert r["npv"] == pytest.approx(2 / 5)
  assert r["sensitivity"] == 0.0
  assert r["specificity"] == 1.0
  assert r["accuracy"] == pytest.approx(2 / 5)
  empty = metrics.rates({"tp": 0, "fp": 0, "tn": 0, "fn": 0})
  assert all(math.isnan(v) for v in empty.values())


# --- Operating points --------------------------------------------------------------------------


def test_youden_threshold_by_hand_breaks_ties_high():
  # (tp, fp) and J at 0.9: (1,0) 1/3; 0.7: (2,0) 2/3; 0.6: (2,1) 1/3; 0.4: (3,1) 2/3; 0.3: 1/3.
  # J ties at 0.7 and 0.4 (and 2/3 - 0 != 1 - 1/3 in floats): the higher threshold wins.
  assert metrics.youden_threshold(HAND_LABELS, HAND_SCORES) == 0.7


def test_triage_threshold_by_hand():
  # Sensitivity >= 0.9 needs all 3 positives: thresholds 0.4 (fp 1), 0.3 (fp 2), 0.1 (fp 3).
  t = metrics.triage_threshold(HAND_LABELS, HAND_SCORES)
  assert t == 0.4
  r = metrics.rates(metrics.confusion(HAND_LABELS, HAND_SCORES, t))
  assert r["sensitivity"] >= 0.9
  assert r["specificity"] == pytest.approx(2 / 3)
  # Sensitivity >= 0.6 needs 2 positives: 0.7 has fp 0, the best specificity (and the highest).
  assert metrics.triage_threshold(HAND_LABELS, HAND_SCORES, min_sensitivity=0.6) == 0.7


def test_triage_threshold_ties_take_the_highest_sensitivity():
  # Positives {0.9, 0.8, 0.7}, negatives {0.95, 0.5}. Sensitivity >= 0.5: 0.8 (2/3) and 0.7 (1)
  # both have fp 1 (specificity 1/2); 0.7 catches one more positive at no cost.
  labels, scores = [0, 1, 1, 1, 0], [0.95, 0.9, 0.8, 0.7, 0.5]
  assert metrics.triage_threshold(labels, scores, min_sensitivity=0.5) == 0.7


def test_triage_threshold_is_the_best_point_on_random_data():
  labels, scores = _separable_ish(203, seed=11)
  t = metrics.triage_threshold(labels, scores)
  r = metrics.rates(metrics.confusion(labels, scores, t))
  assert r["sensitivity"] >= 0.9
  # No distinct score meeting the target beats it on specificity, then sensitivity.
  for other in np.unique(scores):
    o = metrics.rates(metrics.confusion(labels, scores, other))
    if o["sensitivity"] >= 0.9:
      assert (o["specificity"], o["sensitivity"]) <= (r["specificity"], r["sensitivity"])


def test_thresholds_need_both_classes():
  with pytest.raises(ValueError):
    metrics.youden_threshold([1, 1], [0.2, 0.4])
  with pytest.raises(ValueError):
    metrics.triage_threshold([0, 0], [0.2, 0.4])


def test_meets_triage_target():
  assert metrics.WHO_TRIAGE == {"sensitivity": 0.90, "specificity": 0.70}
  assert metrics.meets_triage_target({"sensitivity": 0.9, "specificity": 0.7})
  assert not metrics.meets_triage_target({"sensitivity": 0.95, "specificity": 0.69})
  assert not metrics.meets_triage_target({"sensitivity": 0.89, "specificity": 0.9})
  assert not metrics.meets_triage_target({"sensitivity": float("nan"), "specificity": 0.9})


def test_the_triage_threshold_defaults_to_the_who_sensitivity():
  labels, scores = _separable_ish(203, seed=11)
  assert metrics.triage_threshold(labels, scores) == metrics.triage_threshold(
    labels, scores, min_sensitivity=metrics.WHO_TRIAGE["sensitivity"]
  )
  out = metrics.summarize(labels, scores, labels, scores, n_resamples=10)
  assert tuple(out["operating_points"]) == metrics.OPERATING_POINTS == ("youden", "triage")
  assert out["operating_points"][metrics.TRIAGE]["threshold"] == metrics.triage_threshold(
    labels, scores
  )


def test_operating_point_is_plain_json():
  op = metrics.operating_point(HAND_LABELS, np.array(HAND_SCORES, np.float32), np.float32(0.5))
  assert op["threshold"] == pytest.approx(0.5)
  assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (2, 1, 2, 1)
  assert op["sensitivity"] == pytest.approx(2 / 3)
  assert all(type(v) in (int, float) for v in op.values())
  json.dumps(op)


# --- Bootstrap ---------------------------------------------------------------------------------


def test_vectorised_resample_aucs_match_a_loop():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 2, size=60)
  scores = rng.integers(0, 8, size=60) / 8.0  # ties within and across classes
  pos, neg = scores[labels == 1], scores[labels == 0]
  pos_idx = rng.integers(0, pos.size, size=(50, pos.size))
  neg_idx = rng.integers(0, neg.size, size=(50, neg.size))
  got = metrics._resample_aucs(pos, neg, pos_idx, neg_idx)
  want = [
    metrics.roc_auc(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos[p], neg[q]])
    for p, q in zip(pos_idx, neg_idx, strict=True)
  ]
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_bootstrap_ci_reproducible_and_contains_auc():
  labels, scores = _separable_ish(120, seed=1)
  ci = metrics.bootstrap_auc_ci(labels, scores, seed=7)
  assert ci == metrics.bootstrap_auc_ci(labels, scores, seed=7)
  assert ci != metrics.bootstrap_auc_ci(labels, scores, seed=8)
  low, high = ci
  assert 0.0 <= low < metrics.roc_auc(labels, scores) < high <= 1.0


def test_bootstrap_ci_narrows_with_more_data():
  small = metrics.bootstrap_auc_ci(*_separable_ish(40, seed=2))
  large = metrics.bootstrap_auc_ci(*_separable_ish(400, seed=2))
  assert large[1] - large[0] < 0.6 * (small[1] - small[0])


def test_bootstrap_ci_one_class_is_nan():
  low, high = metrics.bootstrap_auc_ci([1, 1, 1], [0.1, 0.5, 0.9])
  assert math.isnan(low) and math.isnan(high)


def test_bootstrap_is_fast():
  labels, scores = _separable_ish(662, seed=4)
  start = time.perf_counter()
  metrics.bootstrap_auc_ci(labels, scores, n_resamples=2000)
  assert time.perf_counter() - start < 2.0


# --- Evaluation protocol -----------------------------------------------------------------------


def test_summarize_takes_thresholds_from_validation_only():
  # Validation: Youden 0.7, triage 0.4 (the hand case above).
  # Test: positives {0.35, 0.45, 0.5}, negatives {0.05, 0.15, 0.3}: any cut in (0.3, 0.35] is
  # perfect, so the test-optimal Youden threshold is 0.35, not the validation's 0.7.
  test_labels = [1, 1, 1, 0, 0, 0]
  test_scores = [0.35, 0.45, 0.5, 0.05, 0.15, 0.3]
  assert metrics.youden_threshold(test_labels, test_scores) == 0.35
  out = metrics.summarize(HAND_LABELS, HAND_SCORES, test_labels, test_scores, n_resamples=200)
  youden = out["operating_points"]["youden"]
  triage = out["operating_points"]["triage"]
  assert youden["threshold"] == 0.7
  assert (youden["tp"], youden["fp"], youden["tn"], youden["fn"]) == (0, 0, 3, 3)
  assert triage["threshold"] == 0.4
  assert (triage["tp"], triage["fp"], triage["tn"], triage["fn"]) == (2, 0, 3, 1)
  assert triage["meets_who_triage"] is False  # sensitivity 2/3 on test
  assert out["auc"] == 1.0
  assert out["validation_auc"] == pytest.approx(8 / 9)
  assert out["n"] == 6 and out["n_positive"] == 3
  assert out["auc_ci95"] == [1.0, 1.0]  # every stratified resample is still perfectly separated
  json.dumps(out)

  # Different test scores: same thresholds, different test metrics.
  other = metrics.summarize(
    HAND_LABELS, HAND_SCORES, test_labels, [0.95, 0.8, 0.75, 0.05, 0.15, 0.3], n_resamples=200
  )
  assert other["operating_points"]["youden"]["threshold"] == 0.7
  assert other["operating_points"]["triage"]["threshold"] == 0.4
  assert other["operating_points"]["youden"]["tp"] == 3
  assert other["operating_points"]["triage"]["meets_who_triage"] is True


def test_summarize_ci_reproducible_with_seed():
  val = _separable_ish(100, seed=20)
  test = _separable_ish(100, seed=21)
  a = metrics.summarize(*val, *test, seed=3, n_resamples=300)
  b = metrics.summarize(*val, *test, seed=3, n_resamples=300)
  assert a == b
  assert a["auc_ci95"] == list(metrics.bootstrap_auc_ci(*test, seed=3, n_resamples=300))


# --- Cross-validation --------------------------------------------------------------------------


def test_cross_validation_summary_by_hand():
  out = metrics.cross_validation_summary([0.8, 0.9, 1.0])
  assert out["fold_aucs"] == [0.8, 0.9, 1.0]
  assert out["mean"] == pytest.approx(0.9)
  assert out["sd"] == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)


def test_cross_validation_summary_nan_safe():
  out = metrics.cross_validation_summary([0.8, float("nan"), 1.0])
  assert out["mean"] == pytest.approx(0.9)
  assert out["sd"] == pytest.approx(math.sqrt(0.02))  # two finite folds, ddof=1
  single = metrics.cross_validation_summary([0.85])
  assert single["mean"] == pytest.approx(0.85) and math.isnan(single["sd"])
  assert math.isnan(metrics.cross_validation_summary([])["mean"])


def test_pooled_out_of_fold_pools_every_case_once_and_sums_fold_counts():
  folds = [_separable_ish(40, seed=30 + k) for k in range(3)]
  val = _separable_ish(40, seed=40)
  reports = [metrics.summarize(*val, *fold, n_resamples=100) for fold in folds]
  labels = np.concatenate([y for y, _ in folds])
  scores = np.concatenate([s for _, s in folds])
  groups = np.array(["a", "b"] * 60)
  out = metrics.pooled_out_of_fold(reports, labels, scores, n_resamples=300, seed=1, groups=groups)
  assert out["auc"] == metrics.roc_auc(labels, scores) and out["n"] == 120
  assert out["auc_ci95"] == list(metrics.bootstrap_auc_ci(labels, scores, n_resamples=300, seed=1))
  triage = out["operating_points"]["triage"]
  assert triage["thresholds"] == [r["operating_points"]["triage"]["threshold"] for r in reports]
  for key in ("tp", "fp", "tn", "fn"):
    assert triage[key] == sum(r["operating_points"]["triage"][key] for r in reports)
  assert triage["sensitivity"] == triage["tp"] / (triage["tp"] + triage["fn"])
  # The fold reports have no groups, so the groups get AUCs but no summed counts.
  assert set(out["by_group"]) == {"a", "b"} and out["by_group"]["a"]["n"] == 60
  assert "operating_points" not in out["by_group"]["a"]
  json.dumps(out)
  with pytest.raises(ValueError, match="120 pooled cases, but the folds hold 80"):
    metrics.pooled_out_of_fold(reports[:2], labels, scores)


# --- Calibration and groups --------------------------------------------------------------------


def test_calibration_by_hand():
  # Bins of 0.5: [0, 0.5) holds 0.1 (-), 0.2 (+), 0.3 (-); [0.5, 1] holds 0.8 (+), 1.0 (+).
  out = metrics.calibration([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 1.0], num_bins=2)
  low, high = out["bins"]
  assert (low["n"], low["mean_score"], low["fraction_positive"]) == (3, pytest.approx(0.2), 1 / 3)
  assert (high["n"], high["mean_score"], high["fraction_positive"]) == (2, 0.9, 1.0)
  # ECE: (3 * |0.2 - 1/3| + 2 * |0.9 - 1|) / 5.
  assert out["ece"] == pytest.approx((3 * (1 / 3 - 0.2) + 2 * 0.1) / 5)
  assert out["n"] == 5 and out["num_bins"] == 2 and (low["low"], high["high"]) == (0.0, 1.0)


def test_calibration_perfect_empty_bins_and_bad_inputs():
  # Scores equal to each bin's fraction of positives: ECE 0. Empty bins have no means.
  labels = [0, 0, 0, 1] + [1, 1, 1, 0]
  scores = [0.25] * 4 + [0.75] * 4
  out = metrics.calibration(labels, scores)
  assert out["ece"] == pytest.approx(0.0)
  assert [b["n"] for b in out["bins"]] == [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]
  assert out["bins"][0]["mean_score"] is None and out["bins"][0]["fraction_positive"] is None
  assert math.isnan(metrics.calibration([], [])["ece"])
  with pytest.raises(ValueError, match="probabilities"):
    metrics.calibration([0, 1], [0.5, 1.5])
  # Overconfident: every score 0.99 but half are normal.
  assert metrics.calibration([0, 1] * 10, [0.99] * 20)["ece"] == pytest.approx(0.49)


def test_summarize_reports_each_group_at_the_shared_thresholds():
  val = _separable_ish(60, seed=50)
  labels, scores = _separable_ish(80, seed=51)
  groups = np.array(["site_a"] * 30 + ["site_b"] * 50)
  out = metrics.summarize(*val, labels, scores, n_resamples=200, groups=groups)
  assert set(out["by_group"]) == {"site_a", "site_b"}
  b = out["by_group"]["site_b"]
  assert b["n"] == 50 and b["auc"] == metrics.roc_auc(labels[30:], scores[30:])
  assert (
    b["operating_points"]["triage"]["threshold"] == out["operating_points"]["triage"]["threshold"]
  )
  assert b["calibration"]["n"] == 50
  assert "by_group" not in metrics.summarize(*val, labels, scores, groups=["x"] * 80)
  with pytest.raises(ValueError, match="name each"):
    metrics.summarize(*val, labels, scores, groups=["x"] * 3)


def test_proportional_energy_is_the_share_of_heat_inside_the_mask():
  heat = np.zeros((3, 4, 4))
  heat[0, :2] = 1.0  # all inside
  heat[1, :, :] = 1.0  # half inside
  mask = np.zeros((3, 4, 4), bool)
  mask[:, :2] = True
  summary = metrics.proportional_energy(heat, mask)  # heat[2] is all zero: left out
  assert summary["n"] == 2 and summary["mean"] == pytest.approx(0.75)
  assert summary["sd"] == pytest.approx(0.25) and summary["mask_share"] == pytest.approx(0.5)
  none = metrics.proportional_energy(np.zeros((1, 2, 2)), np.ones((1, 2, 2), bool))
  assert none["n"] == 0 and none["mean"] is None


def test_proportional_energy_counts_the_all_zero_maps_it_leaves_out():
  heat = np.zeros((3, 2, 2))
  heat[0] = 1.0
  summary = metrics.proportional_energy(heat, np.ones((3, 2, 2), bool))
  assert summary["n"] == 1 and summary["n_all_zero"] == 2
  assert (
    metrics.proportional_energy(np.zeros((1, 2, 2)), np.ones((1, 2, 2), bool))["n_all_zero"] == 1
  )


# --- subgroups ---------------------------------------------------------------------


def _two_sexes(n, seed, female_shift=2.0, male_shift=2.0):
  """Labels, scores and sexes: a group's abnormal scores sit `shift` logits above its normals'."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  sexes = np.where(rng.random(n) < 0.5, "female", "male")
  shift = np.where(sexes == "female", female_shift, male_shift)
  scores = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + labels * shift - shift / 2)))
  return labels, scores, sexes


def test_age_bands_parse_and_place_every_age():
  bands = metrics.parse_age_bands(metrics.AGE_BANDS)
  assert [name for name, _, _ in bands] == ["0-17", "18-39", "40-59", "60+"]
  ages = [-1, 0, 17, 18, 39, 40, 59, 60, 150]
  assert metrics.age_bands_of(ages, bands).tolist() == [
    "unknown", "0-17", "0-17", "18-39", "18-39", "40-59", "40-59", "60+", "60+"
  ]  # fmt: skip
  for bad in ("1-17,18+", "0-17,20-39,40+", "0-17,18-39", "0-17,x+", "0-17,10-39,40+"):
    with pytest.raises(ValueError, match="age band"):
      metrics.parse_age_bands(bad)
  with pytest.raises(ValueError, match="an empty band in '0-17,18\\+,': remove the extra comma"):
    metrics.parse_age_bands("0-17,18+,")


def test_a_group_with_too_few_of_a_class_gets_its_n_and_no_figures():
  labels, scores, _ = _two_sexes(200, seed=1)
  groups = np.array(["big"] * 185 + ["small"] * 15)
  labels[185:] = [1] * 9 + [0] * 6  # 9 abnormal: fewer than MIN_PER_CLASS
  out = metrics.subgroups(labels, scores, {"triage": 0.5}, {"g": groups}, n_resamples=100)
  assert out["g"]["small"] == {"n": 15, "n_positive": 9, "too_few": True}
  big = out["g"]["big"]
  assert big["too_few"] is False and big["n"] == 185
  assert big["gaps"] is None and big["differs"] is None  # the rest is too few to compare
  assert metrics.subgroups(labels, scores, {}, {"one": ["x"] * 200}) == {}  # nothing to compare


def test_subgroup_operating_points_use_the_given_thresholds_never_new_ones():
  labels, scores, sexes = _two_sexes(300, seed=2)
  cut = np.where(np.arange(300) < 150, 0.4, 0.6)  # per case, as a pooled cross-validation's
  out = metrics.subgroups(
    labels, scores, {"youden": 0.5, "triage": cut}, {"sex": sexes}, n_resamples=100
  )
  female = sexes == "female"
  expected = metrics.confusion(labels[female], scores[female], 0.5)
  got = out["sex"]["female"]["operating_points"]
  assert {k: got["youden"][k] for k in expected} == expected
  predicted = scores[female] >= cut[female]
  assert got["triage"]["tp"] == int(np.sum(predicted & (labels[female] == 1)))
  assert got["triage"]["fp"] == int(np.sum(predicted & (labels[female] == 0)))
  assert out["sex"]["female"]["auc"] == metrics.roc_auc(labels[female], scores[female])
  assert out["sex"]["female"]["ece"] == metrics.calibration(labels[female], scores[female])["ece"]


def test_gaps_are_group_minus_rest_with_reproducible_intervals_and_p_values():
  labels, scores, sexes = _two_sexes(300, seed=3, female_shift=0.5)
  female = sexes == "female"
  called = scores >= 0.5
  tests = metrics.gap_tests(labels, scores, called, female, n_resamples=500, seed=7)

  def figures(side):
    rates = metrics.rates(metrics.confusion(labels[side], scores[side], 0.5))
    return {"auc": metrics.roc_auc(labels[side], scores[side]), **rates}

  group, rest = figures(female), figures(~female)
  for measure in metrics.GAP_MEASURES:
    test = tests[measure]
    assert test["value"] == pytest.approx(group[measure] - rest[measure]), measure
    assert test["ci95"][0] <= test["value"] <= test["ci95"][1] and 0 < test["p"] <= 1
  assert tests["auc"]["ci95"][1] < 0 and tests["auc"]["p"] < 0.01  # a real gap of 1.5 logits
  assert tests == metrics.gap_tests(labels, scores, called, female, n_resamples=500, seed=7)


def test_holm_adjusts_step_down_and_keeps_the_order_given():
  assert metrics.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
  assert metrics.holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # monotone, never above 1
  assert metrics.holm([]) == []


def test_a_weaker_group_is_named_by_its_auc_gap():
  labels, scores, sexes = _two_sexes(400, seed=4, female_shift=0.7)
  out = metrics.subgroups(labels, scores, {"triage": 0.5}, {"sex": sexes}, n_resamples=1000)
  female, male = out["sex"]["female"], out["sex"]["male"]
  assert female["differs"] == "weaker" and "auc" in female["differs_in"]
  assert [(a, g) for a, g, _ in metrics.differing(out)] == [("sex", "female"), ("sex", "male")]
  # Two groups that make up the split are one comparison, seen from either side.
  for measure, test in female["gaps"]["tests"].items():
    twin = male["gaps"]["tests"][measure]
    assert twin["value"] == -test["value"] and twin["p_holm"] == test["p_holm"]
    assert twin["ci95"] == [-test["ci95"][1], -test["ci95"][0]]


def test_underdiagnosis_at_the_threshold_is_named_where_the_auc_gap_is_nil():
  """Women's scores sit lower at the same ranking: an equal AUC, fewer of them called abnormal."""
  rng = np.random.default_rng(8)
  n = 400
  labels = rng.integers(0, 2, n)
  sexes = np.where(rng.random(n) < 0.5, "female", "male")
  logits = rng.normal(0, 1, n) + 3.0 * labels - 1.5 - 1.5 * (sexes == "female")
  scores = 1 / (1 + np.exp(-logits))
  out = metrics.subgroups(labels, scores, {"triage": 0.5}, {"sex": sexes}, n_resamples=1000)
  female = out["sex"]["female"]
  assert female["gaps"]["tests"]["auc"]["p_holm"] > 0.05, female  # no AUC gap to find
  assert female["differs"] == "weaker" and female["differs_in"] == ["sensitivity"], female


def test_groups_of_the_same_images_are_compared_once():
  labels, scores, sexes = _two_sexes(300, seed=9)
  sexes = sexes.astype(object)
  sexes[:60] = metrics.UNKNOWN
  ages = np.where(np.arange(300) < 60, metrics.UNKNOWN, np.where(np.arange(300) % 2, "a", "b"))
  out = metrics.subgroups(
    labels, scores, {"triage": 0.5}, {"sex": sexes, "age": ages}, n_resamples=200
  )
  assert out["age"]["unknown"] == {**out["sex"]["unknown"], "same_as": "sex unknown"}
  assert out["sex"]["unknown"]["gaps"] is not None and "same_as" not in out["sex"]["unknown"]
  compared = [e for by in out.values() for e in by.values() if e.get("gaps")]
  tested = {id(t) for e in compared for t in e["gaps"]["tests"].values()}
  assert len(compared) == 6 and len(tested) == 5 * 3  # the unknown films' tests once
  out["sex"]["unknown"]["differs"] = "weaker"
  assert [(a, g) for a, g, _ in metrics.differing(out)] == [("sex", "unknown")]  # named once


def _demo_card_case(rng):
  """Labels, scores and groups at the demo card's sizes, the scores blind to every group."""
  n = 114
  sexes = np.array(["female"] * 33 + ["male"] * 54 + [metrics.UNKNOWN] * 27)
  ages = np.array(["18-39"] * 16 + ["40-59"] * 55 + ["60+"] * 16 + [metrics.UNKNOWN] * 27)
  ages[:87] = rng.permutation(ages[:87])
  labels = (rng.random(n) < 63 / 114).astype(int)
  scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 3.0 * labels - 1.5)))
  return labels, scores, {"sex": sexes, "age": ages}


def test_groups_are_named_where_none_differs_at_most_about_one_run_in_twenty():
  """The family-wise rate, simulated at the demo card's group sizes with equal scores."""
  rng = np.random.default_rng(2026)
  runs, named = 100, 0
  for run in range(runs):
    labels, scores, groups = _demo_card_case(rng)
    val_labels, val_scores, _ = _demo_card_case(rng)
    thresholds = {
      "youden": metrics.youden_threshold(val_labels, val_scores),
      "triage": metrics.triage_threshold(val_labels, val_scores),
    }
    out = metrics.subgroups(labels, scores, thresholds, groups, seed=run)  # txr's defaults
    named += bool(metrics.differing(out))
  # 5% of 100 is 5; 10 or more has probability 0.03 at a true 5% (binomial).
  assert named <= 9, named


def test_summarize_and_pooled_give_subgroups_at_their_thresholds():
  val = _separable_ish(60, seed=52)
  labels, scores, sexes = _two_sexes(120, seed=5)
  out = metrics.summarize(*val, labels, scores, n_resamples=100, attributes={"sex": sexes})
  female = sexes == "female"
  triage = out["operating_points"]["triage"]["threshold"]
  expected = metrics.confusion(labels[female], scores[female], triage)
  got = out["subgroups"]["sex"]["female"]["operating_points"]["triage"]
  assert {k: got[k] for k in expected} == expected
  folds = [
    metrics.summarize(*val, labels[:60], scores[:60], n_resamples=50),
    metrics.summarize(*_separable_ish(60, seed=53), labels[60:], scores[60:], n_resamples=50),
  ]
  pooled = metrics.pooled_out_of_fold(
    folds, labels, scores, n_resamples=100, attributes={"sex": sexes}
  )
  cut = np.repeat([f["operating_points"]["triage"]["threshold"] for f in folds], 60)
  got = pooled["subgroups"]["sex"]["female"]["operating_points"]["triage"]
  assert got["tp"] == int(np.sum((scores >= cut) & female & (labels == 1)))
  assert got["tn"] == int(np.sum((scores < cut) & female & (labels == 0)))
