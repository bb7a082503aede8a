"""The text people read, from hand-made reports (no TensorFlow)."""

import math

from txr_model import metrics
from txr_model import model_card
from txr_model import report_text


def _summary(auc=0.9, n=10, n_positive=4, sensitivity=0.75, specificity=0.5, by_group=None):
  """The parts of a `metrics.summarize` output that the text reads."""
  out = {
    "auc": auc,
    "auc_ci95": [auc - 0.1, min(auc + 0.05, 1.0)],
    "n": n,
    "n_positive": n_positive,
    "operating_points": {
      metrics.YOUDEN: {"threshold": 0.6, "sensitivity": 0.5, "specificity": 1.0},
      metrics.TRIAGE: {
        "threshold": 0.31234,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "tp": 3,
        "fp": 3,
        "tn": 3,
        "fn": 1,
      },
    },
    "calibration": {"ece": 0.125, "n": n, "num_bins": 10},
  }
  if by_group:
    out["by_group"] = by_group
  return out


def _report(result, key="test", folds=False):
  evaluated = {"dataset": "montgomery_cxr/512", "split": key, "n": result["n"]}
  if folds:
    evaluated.update(folds=[2], num_folds=3)
  return {
    key: result,
    "protocol": {
      "thresholds_from": {"dataset": "shenzhen_cxr/512", "split": "validation", "n": 9},
      "evaluated": evaluated,
    },
  }


def test_headline_is_one_line_with_the_triage_point():
  assert report_text.headline(_summary(), "test") == (
    "test AUC 0.900 (95% CI 0.800-0.950); triage point: sensitivity 0.750, specificity 0.500;"
    " ECE 0.125 (N=10)"
  )


def test_describe_report_names_what_was_evaluated_and_where_the_threshold_came_from():
  lines = report_text.describe_report(_report(_summary(), folds=True), "test").splitlines()
  assert lines == [
    "montgomery_cxr/512 test folds [2] of 3 (N=10): AUC 0.900 (95% CI 0.800-0.950) on 10 images"
    " (4 abnormal); ECE 0.125.",
    "  At the triage threshold 0.3123, chosen on shenzhen_cxr/512 validation (N=9): sensitivity"
    " 0.750, specificity 0.500 (tp 3, fp 3, tn 3, fn 1).",
  ]


def test_describe_report_adds_the_datasets_and_the_lung_energy():
  groups = {"a/512": _summary(0.8, 6, 2), "b/512": _summary(1.0, 4, 2, 1.0, 1.0)}
  result = _summary(by_group=groups)
  result["grad_cam_lung_energy"] = {
    "mean": 0.61, "sd": 0.1, "n": 3, "n_all_zero": 1, "mask_share": 0.3,
  }  # fmt: skip
  lines = report_text.describe_report(_report(result), "test").splitlines()
  assert lines[1:3] == [
    "    a/512: AUC 0.800 (95% CI 0.700-0.850) on 6 images (2 abnormal); ECE 0.125; triage"
    " point: sensitivity 0.750, specificity 0.500",
    "    b/512: AUC 1.000 (95% CI 0.900-1.000) on 4 images (2 abnormal); ECE 0.125; triage"
    " point: sensitivity 1.000, specificity 1.000",
  ]
  assert lines[4:] == [
    "  Grad-CAM energy inside the lung masks: 0.610 +/- 0.100 (mean +/- sd over 3 abnormal"
    " images; the masks cover 0.300 of the frame, what a uniform heat map scores).",
    "  1 abnormal image(s) had an all-zero heat map, left out.",
  ]
  result["grad_cam_lung_energy"].update(n=0, n_all_zero=0)  # Nothing measured: no energy lines.
  assert len(report_text.describe_report(_report(result), "test").splitlines()) == 4


def test_describe_run_closes_a_training_run():
  report = {"test": _summary(), "run": {"weights": "best: epoch 3, val AUC 0.9000"}}
  lines = report_text.describe_run(report, "/tmp/run").splitlines()
  assert lines[:4] == [
    "txr-train: done. Outputs in /tmp/run",
    "  Test AUC 0.900 (95% CI 0.800-0.950) on 10 held-out images (4 abnormal); weights: best:"
    " epoch 3, val AUC 0.9000.",
    "  At the triage threshold chosen on validation: sensitivity 0.750, specificity 0.500.",
    "  Calibration: ECE 0.125 (10 bins, N=10; reliability.png).",
  ]
  assert lines[4].startswith("  AUC is the chance that an abnormal image scores above")
  report["test"]["by_group"] = {"a/512": _summary(0.8, 6, 2)}
  assert report_text.describe_run(report, "/tmp/run").splitlines()[2].startswith("    a/512: AUC")


def test_describe_cross_validation_gives_folds_mean_and_pooled():
  pooled = _summary(0.85, 30, 12, by_group={"a/512": _summary(0.8, 20, 8)})
  summary = {"fold_aucs": [0.8, 0.9, 0.85], "mean": 0.85, "sd": 0.05, "pooled": pooled}
  assert report_text.describe_cross_validation(summary).splitlines() == [
    "3-fold cross-validation AUC 0.850 +/- 0.050 (per fold: 0.800, 0.900, 0.850).",
    "  Pooled out-of-fold: AUC 0.850 (95% CI 0.750-0.900) on 30 images (12 abnormal); ECE"
    " 0.125; every image scored once, by the model that did not train on it.",
    "    a/512: AUC 0.800 (95% CI 0.700-0.850) on 20 images (8 abnormal); ECE 0.125",
  ]


def test_nan_figures_read_as_nan():
  result = _summary(auc=math.nan, sensitivity=math.nan)
  assert report_text.headline(result, "test").startswith("test AUC nan (95% CI nan-nan);")


def _subgroup(n, n_positive, auc=None, gap=None, differs=None):
  """A `metrics.subgroups` entry: too few without an AUC; an AUC gap `gap` (p 0.01 if named)."""
  if auc is None:
    return {"n": n, "n_positive": n_positive, "too_few": True}
  test = gap is not None and {
    "value": gap,
    "ci95": [gap - 0.1, gap + 0.05],
    "p": 0.002,
    "p_holm": 0.01 if differs else 0.5,
  }
  return {
    "n": n,
    "n_positive": n_positive,
    "too_few": False,
    "auc": auc,
    "auc_ci95": [auc - 0.1, auc + 0.05],
    "operating_points": {metrics.TRIAGE: {"sensitivity": 0.6, "specificity": 0.9}},
    "ece": 0.08,
    "gaps": test and {"n_rest": 50, "at": metrics.TRIAGE, "tests": {"auc": test}},
    "differs": differs,
    "differs_in": ["auc"] if differs else [],
  }


def test_subgroups_name_the_weakest_and_give_too_few_groups_no_auc():
  result = _summary()
  result["subgroups"] = {
    "age": {"0-17": _subgroup(8, 3), "18-39": _subgroup(40, 20, 0.85, -0.02)},
    "sex": {
      "female": _subgroup(30, 15, 0.7, -0.2, "weaker"),
      "male": _subgroup(40, 20, 0.9, 0.2, "stronger"),
      "unknown": {"n": 8, "n_positive": 3, "too_few": True, "same_as": "age 0-17"},
    },
  }
  report = {"test": result, "run": {"weights": "best: epoch 3, val AUC 0.9000"}}
  lines = report_text.describe_run(report, "/tmp/run").splitlines()
  assert "    age 0-17: N=8 (3 abnormal), too few to say (fewer than 10 of a class)" in lines
  assert "    sex unknown: N=8 (3 abnormal), the same images as age 0-17" in lines
  assert (
    "    sex female: N=30 (15 abnormal), AUC 0.700 (95% CI 0.600-0.750), sensitivity 0.600,"
    " specificity 0.900, ECE 0.080; auc gap -0.200 (95% CI -0.300 to -0.150, adjusted p 0.010)"
  ) in lines
  assert (
    "  Weaker than the rest: sex female (auc gap -0.200 (95% CI -0.300 to -0.150, adjusted p"
    " 0.010))."
  ) in lines
  assert (
    "  Stronger than the rest: sex male (auc gap +0.200 (95% CI +0.100 to +0.250, adjusted p"
    " 0.010))."
  ) in lines
  assert lines[-1] == (
    "  Weakest subgroup: sex female, AUC 0.700 on 30 images, auc gap -0.200 (95% CI -0.300 to"
    " -0.150, adjusted p 0.010)."
  )
  for attribute in result["subgroups"].values():
    for group in attribute.values():
      group["differs"] = None
      group["differs_in"] = []
  for text in (
    report_text.describe_run(report, "/tmp/run"),
    report_text.describe_report(_report(result), "test"),
  ):
    assert text.splitlines()[-1] == f"  {report_text.NONE_WEAKER}"
    assert "Weaker than" not in text and "Weakest" not in text


def test_a_set_with_one_group_per_attribute_says_nothing_could_be_compared():
  result = _summary()
  # One sex, one age band: each group is the whole split, so there is no rest to compare.
  result["subgroups"] = {
    "sex": {"male": _subgroup(114, 63, 0.9)},
    "age": {"40-59": _subgroup(114, 63, 0.9)},
  }
  report = {"test": result, "run": {"weights": "best: epoch 3, val AUC 0.9000"}}
  last = report_text.describe_run(report, "/tmp/run").splitlines()[-1]
  assert last.startswith("  No subgroup could be compared with the rest"), last
  assert "No subgroup is weaker" not in report_text.describe_run(report, "/tmp/run")
  card = "\n".join(model_card._subgroups(result))  # the card says so too
  assert report_text.NOTHING_COMPARED in card and report_text.NONE_WEAKER not in card
