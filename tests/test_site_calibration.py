"""The site calibration's arithmetic against a case computed by hand."""

import pytest

from txr_lite import site_calibration as sc

# 4 abnormal, 4 normal films; a film is read abnormal when its score is at or above t.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
LABELS = [1, 1, 0, 1, 0, 0, 1, 0]


def test_the_table_counts_every_threshold():
  rows = sc.table(SCORES, LABELS, prevalence=0.1)
  assert [r.threshold for r in rows] == SCORES
  assert [(r.tp, r.fp) for r in rows] == [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (3, 3), (4, 3),
                                          (4, 4)]  # fmt: skip
  assert all(r.tp + r.fn == 4 and r.tn + r.fp == 4 for r in rows)


def test_tied_scores_are_one_threshold():
  rows = sc.table([0.5, 0.5, 0.2], [1, 0, 0], prevalence=0.5)
  assert [(r.threshold, r.tp, r.fp) for r in rows] == [(0.5, 1, 1), (0.2, 1, 2)]


def test_per_thousand_at_the_triage_point_by_hand():
  rows = sc.table(SCORES, LABELS, prevalence=0.1)
  chosen = sc.Rule().choose(rows)  # sensitivity >= 0.90: t=0.2 (spec .25) beats t=0.1 (spec 0)
  assert (chosen.threshold, chosen.sensitivity, chosen.specificity) == (0.2, 1.0, 0.25)
  per = chosen.per_thousand()
  # referred = 1000 (0.1 x 1 + 0.9 x 0.75); found 100; PPV 100/775; NPV 225/225.
  assert per["referred"] == pytest.approx(775)
  assert (per["found"], per["missed"]) == (pytest.approx(100), pytest.approx(0))
  assert per["ppv"] == pytest.approx(100 / 775) and per["npv"] == pytest.approx(1.0)
  assert per["tests_per_case_found"] == pytest.approx(7.75)


def test_a_target_sensitivity_and_a_referral_cap():
  rows = sc.table(SCORES, LABELS, prevalence=0.1)
  chosen = sc.Rule(target_sensitivity=0.7).choose(rows)
  assert (chosen.threshold, chosen.sensitivity, chosen.specificity) == (0.6, 0.75, 0.75)
  per = chosen.per_thousand()
  assert (per["referred"], per["found"], per["missed"]) == pytest.approx((300, 75, 25))
  assert per["npv"] == pytest.approx(675 / 700)
  # Referral rates: t=0.9 0.025, t=0.8 0.05, t=0.7 0.275: at most 0.2 allows 0.9 and 0.8.
  capped = sc.Rule(target_sensitivity=None, max_referral_rate=0.2).choose(rows)
  assert (capped.threshold, capped.sensitivity) == (0.8, 0.5)
  with pytest.raises(ValueError, match="no threshold meets the rule"):
    sc.Rule(target_sensitivity=None, max_referral_rate=0.01).choose(rows)


def test_wilson_intervals_and_the_warning_in_words():
  assert sc.wilson(3, 4) == pytest.approx((0.3006, 0.9544), abs=1e-4)
  assert sc.wilson(0, 10)[0] == 0 and sc.wilson(10, 10)[1] == 1
  rows = sc.table(SCORES, LABELS, prevalence=0.1)
  warning = sc.Rule().warning(sc.Rule().choose(rows))
  assert "with 4 abnormal films, the sensitivity at this threshold is 1.000 (95% CI 0.510" in (
    warning
  )
  many = sc.table([0.9] * 98 + [0.1] * 2 + [0.2] * 100, [1] * 100 + [0] * 100, 0.1)
  assert (
    sc.Rule().warning(sc.Rule().choose(many)) is None
  )  # 98/100: the CI (0.930-0.995) clears 0.90


def test_refusals():
  with pytest.raises(ValueError, match="needs films of both"):
    sc.table([0.1, 0.2], [1, 1], 0.1)
  with pytest.raises(ValueError, match="--prevalence=0"):
    sc.table(SCORES, LABELS, 0)
