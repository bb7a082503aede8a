"""The text people read: every summary txr-train and txr-evaluate print or log.

Formatting only, of the reports that `evaluation` and `metrics` build: no
TensorFlow, nothing read or written.
"""

from txr_model import metrics

# The verdict when no group had enough images, nor the rest of its split, to be compared
# (printed here and written in the model card).
NOTHING_COMPARED = (
  "No subgroup could be compared with the rest: no group, or the rest of its split, has"
  f" {metrics.MIN_PER_CLASS} images of each class."
)

# The verdict when groups were compared and none is weaker, in the log and the model card.
NONE_WEAKER = (
  f"No subgroup is weaker than the rest: no gap's Holm-adjusted p is below"
  f" {metrics.FAMILY_ALPHA}, or the group has fewer than {metrics.MIN_PER_CLASS} images of a"
  " class."
)


def headline(result: dict, split: str) -> str:
  """One line on an evaluated split: AUC with its CI, the triage point, ECE and N (for the log).

  Args:
    result: a `metrics.summarize` output.
    split: its name.

  Returns:
    The line.
  """
  low, high = result["auc_ci95"]
  triage = result["operating_points"][metrics.TRIAGE]
  return (
    f"{split} AUC {result['auc']:.3f} (95% CI {low:.3f}-{high:.3f}); triage point: sensitivity"
    f" {triage['sensitivity']:.3f}, specificity {triage['specificity']:.3f};"
    f" ECE {result['calibration']['ece']:.3f} (N={result['n']})"
  )


def describe_run(report: dict, model_dir: str) -> str:
  """The closing lines of a training run: the test figures with their N and CI, and what they mean.

  Args:
    report: the report of `finish.finish_run`.
    model_dir: where the outputs went.

  Returns:
    Lines for the user.
  """
  test = report["test"]
  triage = test["operating_points"][metrics.TRIAGE]
  low, high = test["auc_ci95"]
  calibration = test["calibration"]
  return "\n".join(
    [
      f"txr-train: done. Outputs in {model_dir}",
      f"  Test AUC {test['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) on {test['n']} held-out"
      f" images ({test['n_positive']} abnormal); weights: {report['run']['weights']}.",
      *_describe_by_group(test),
      f"  At the triage threshold chosen on validation: sensitivity {triage['sensitivity']:.3f},"
      f" specificity {triage['specificity']:.3f}.",
      f"  Calibration: ECE {calibration['ece']:.3f} ({calibration['num_bins']} bins, N="
      f"{calibration['n']}; reliability.png).",
      "  AUC is the chance that an abnormal image scores above a normal one. It holds for"
      " images like this dataset's test split (same source, scanner and population), not for"
      " others; on the demo's synthetic sample it shows that training works, not clinical skill.",
      *describe_subgroups(test),
    ]
  )


def describe_report(report: dict, key: str) -> str:
  """A few lines on one evaluation: what was evaluated, AUC with CI and N, the triage point.

  Args:
    report: `evaluation.evaluate_split`'s report.
    key: the evaluated split's key in it.

  Returns:
    Lines for the user.
  """
  result, protocol = report[key], report["protocol"]
  triage = result["operating_points"][metrics.TRIAGE]
  energy = result.get("grad_cam_lung_energy")
  return "\n".join(
    [
      f"{_input_text(protocol['evaluated'])}: {_auc_text(result)}.",
      *_describe_by_group(result),
      f"  At the triage threshold {triage['threshold']:.4f}, chosen on"
      f" {_input_text(protocol['thresholds_from'])}: sensitivity {triage['sensitivity']:.3f},"
      f" specificity {triage['specificity']:.3f} (tp {triage['tp']}, fp {triage['fp']},"
      f" tn {triage['tn']}, fn {triage['fn']}).",
      *(
        [
          f"  Grad-CAM energy inside the lung masks: {energy['mean']:.3f} +/- {energy['sd']:.3f}"
          f" (mean +/- sd over {energy['n']} abnormal images; the masks cover"
          f" {energy['mask_share']:.3f} of the frame, what a uniform heat map scores)."
        ]
        if energy and energy["n"]
        else []
      ),
      *(
        [f"  {energy['n_all_zero']} abnormal image(s) had an all-zero heat map, left out."]
        if energy and energy["n_all_zero"]
        else []
      ),
      *describe_subgroups(result),
    ]
  )


def describe_cross_validation(summary: dict) -> str:
  """One paragraph on a cross-validation: per-fold AUCs, mean +/- sd, pooled AUC with its CI.

  Args:
    summary: `evaluation.cross_validation_report`'s output.

  Returns:
    Lines for the user.
  """
  pooled = summary["pooled"]
  lines = [
    f"{len(summary['fold_aucs'])}-fold cross-validation AUC {summary['mean']:.3f} +/-"
    f" {summary['sd']:.3f} (per fold: {', '.join(f'{a:.3f}' for a in summary['fold_aucs'])}).",
    f"  Pooled out-of-fold: {_auc_text(pooled)}; every image scored once, by the model that"
    " did not train on it.",
  ]
  for name, group in pooled.get("by_group", {}).items():
    lines.append(f"    {name}: {_auc_text(group)}")
  lines += describe_subgroups(pooled)
  return "\n".join(lines)


def describe_subgroups(summary: dict) -> list[str]:
  """Each subgroup's figures, then which differ from the rest and the weakest (none without).

  Args:
    summary: a `metrics.summarize` (or pooled) output; nothing without "subgroups".

  Returns:
    Lines for the user, the verdict last.
  """
  figures = summary.get("subgroups")
  if figures is None:
    return []
  lines = [
    "  Subgroups, at the thresholds chosen on validation (sensitivity and specificity at the"
    " triage point). Gaps: the group's figure minus the rest of the split's, 95% CI from a BCa"
    " bootstrap, p from a permutation test, Holm-adjusted over every gap below:"
  ]
  for attribute, groups in figures.items():
    for name, group in groups.items():
      lines.append(f"    {attribute} {name}: {_subgroup_text(group)}")
  found = metrics.differing(figures)
  for direction in ("weaker", "stronger"):
    named = [f"{a} {n} ({gap_text(g)})" for a, n, g in found if g["differs"] == direction]
    if named:
      lines.append(f"  {direction.capitalize()} than the rest: {'; '.join(named)}.")
  weakest = [(a, n, g) for a, n, g in found if g["differs"] == "weaker"]
  if weakest:
    attribute, name, group = weakest[0]
    lines.append(
      f"  Weakest subgroup: {attribute} {name}, AUC {group['auc']:.3f} on {group['n']} images,"
      f" {gap_text(group)}."
    )
  elif not metrics.any_compared(figures):
    lines.append(f"  {NOTHING_COMPARED}")
  else:
    lines.append(f"  {NONE_WEAKER}")
  return lines


def _subgroup_text(group: dict) -> str:
  """One subgroup's N, AUC with CI, triage-point rates, ECE and gaps; or its N and why not."""
  counts = f"N={group['n']} ({group['n_positive']} abnormal)"
  if "same_as" in group:
    return f"{counts}, the same images as {group['same_as']}"
  if group["too_few"]:
    return f"{counts}, too few to say (fewer than {metrics.MIN_PER_CLASS} of a class)"
  low, high = group["auc_ci95"]
  triage = group["operating_points"][metrics.TRIAGE]
  gaps = f"; {gap_text(group, all_gaps=True)}" if group["gaps"] else "; the rest too few to compare"
  return (
    f"{counts}, AUC {group['auc']:.3f} (95% CI {low:.3f}-{high:.3f}), sensitivity"
    f" {triage['sensitivity']:.3f}, specificity {triage['specificity']:.3f}, ECE"
    f" {group['ece']:.3f}{gaps}"
  )


def gap_test_text(test: dict) -> str:
  """One gap as '-0.200 (95% CI -0.300 to -0.150, adjusted p 0.004)'."""
  low, high = test["ci95"]
  return f"{test['value']:+.3f} (95% CI {low:+.3f} to {high:+.3f}, adjusted p {test['p_holm']:.3f})"


def gap_text(group: dict, all_gaps: bool = False) -> str:
  """A compared group's gaps: those it differs in (all of them with all_gaps, or if none)."""
  tests = group["gaps"]["tests"]
  shown = tests if all_gaps or not group.get("differs_in") else group["differs_in"]
  return ", ".join(f"{measure} gap {gap_test_text(tests[measure])}" for measure in shown)


def _describe_by_group(summary: dict) -> list[str]:
  """Per-dataset lines of a summary with several datasets (none otherwise).

  Args:
    summary: a `metrics.summarize` output.

  Returns:
    One line per dataset: AUC, CI, N, and the triage point's rates.
  """
  lines = []
  for name, group in summary.get("by_group", {}).items():
    triage = group["operating_points"][metrics.TRIAGE]
    lines.append(
      f"    {name}: {_auc_text(group)}; triage point: sensitivity"
      f" {triage['sensitivity']:.3f}, specificity {triage['specificity']:.3f}"
    )
  return lines


def _input_text(described: dict) -> str:
  folds = f" folds {described['folds']} of {described['num_folds']}" if "folds" in described else ""
  return f"{described['dataset']} {described['split']}{folds} (N={described['n']})"


def _auc_text(summary: dict) -> str:
  low, high = summary["auc_ci95"]
  return (
    f"AUC {summary['auc']:.3f} (95% CI {low:.3f}-{high:.3f}) on {summary['n']} images"
    f" ({summary['n_positive']} abnormal); ECE {summary['calibration']['ece']:.3f}"
  )
