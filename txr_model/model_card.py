"""The model card (MODEL_CARD.md): what a model is, what it learnt from, how well and for whom.

Rendered from one evaluation's metrics.json alone (its report, NaN as null),
so every figure in it is that file's, never typed by hand: `render` of the same
report always gives the same card. The format is the one model hubs read:
YAML front matter (license, tags, datasets, metrics, model-index), then
Markdown. Formatting only: no TensorFlow, nothing read or written.
"""

import json

from txr_model import metrics
from txr_model import report_text

LICENSE = "apache-2.0"  # txr's own (pyproject.toml); the datasets' terms are their own.
TAGS = ("tuberculosis", "chest-x-ray", "medical-imaging", "image-classification", "keras", "txr")
_POINT_NAMES = {metrics.YOUDEN: "Youden's J", metrics.TRIAGE: "WHO triage"}


def evaluated_key(report: dict) -> str:
  """The evaluated split's key in an `evaluation.evaluate_split` report."""
  keys = [k for k in report if k not in ("validation", "protocol", "run")]
  return keys[0] if keys else "validation"


def render(report: dict) -> str:
  """The model card of one evaluation.

  Args:
    report: a metrics.json, as read back (`report_files.json_safe` of an
      `evaluation.evaluate_split` report).

  Returns:
    MODEL_CARD.md's text.
  """
  key = evaluated_key(report)
  result, protocol, run = report[key], report["protocol"], report.get("run") or {}
  evaluated, chosen = protocol["evaluated"], protocol["thresholds_from"]
  lines = [
    *_front_matter(result, evaluated, run),
    "# txr: tuberculosis screening on chest X-rays",
    "",
    f"A {_BACKBONE_NAMES.get(run.get('backbone', 'inception_v3'), run.get('backbone'))}"
    " classifier that scores a frontal chest X-ray for signs of tuberculosis"
    " (P(abnormal)), trained and evaluated with txr. Every figure below comes from this"
    " evaluation's metrics.json.",
    "",
    "## Intended use",
    "",
    "- Research on computer-aided detection of pulmonary TB in chest X-rays, and triage"
    " studies in which a clinician reads every film.",
    "- **Not a medical device**, not cleared or approved for diagnosis or for any clinical"
    " decision. It must not decide, alone, that a person has or has not got TB.",
    "- A programme that considers a tool like it should first measure it on its own"
    " population and equipment and set its threshold there (WHO guidance on computer-aided"
    " detection for TB).",
    "",
    *_training(run),
    *_results(key, result, evaluated, chosen),
    *_subgroups(result),
    *_ood(run),
    *_limitations(run, evaluated, chosen, result),
  ]
  return "\n".join(lines).rstrip() + "\n"


def _front_matter(result: dict, evaluated: dict, run: dict) -> list[str]:
  """YAML metadata: license, tags, datasets, metrics and the headline results (model-index)."""
  triage = result["operating_points"][metrics.TRIAGE]
  split = f"{evaluated['dataset']} {evaluated['split']} (N={evaluated['n']})"
  results = [
    ("roc_auc", "AUC", result["auc"]),
    ("sensitivity", "sensitivity at the WHO triage threshold", triage["sensitivity"]),
    ("specificity", "specificity at the WHO triage threshold", triage["specificity"]),
    ("expected_calibration_error", "ECE", result["calibration"]["ece"]),
  ]
  datasets = sorted({*run.get("dataset", evaluated["dataset"]).split("+"), evaluated["dataset"]})
  return [
    "---",
    f"license: {LICENSE}",
    "library_name: keras",
    "pipeline_tag: image-classification",
    "tags:",
    *[f"- {tag}" for tag in TAGS],
    "datasets:",
    *[f"- {_q(name)}" for name in datasets],
    "metrics:",
    *[f"- {kind}" for kind, _, _ in results],
    "model-index:",
    "- name: txr",
    "  results:",
    "  - task:",
    "      type: image-classification",
    "      name: TB screening on chest X-rays",
    "    dataset:",
    f"      name: {_q(split)}",
    f"      type: {_q(evaluated['dataset'])}",
    f"      split: {_q(evaluated['split'])}",
    "    metrics:",
    *[
      line
      for kind, name, value in results
      for line in (f"    - type: {kind}", f"      name: {_q(name)}", f"      value: {_y(value)}")
    ],
    "---",
    "",
  ]


def _training(run: dict) -> list[str]:
  """The training data (images per split by label, sex and age) and the recipe."""
  lines = ["## Training data", ""]
  data = run.get("training_data")
  if run.get("dataset"):
    version = f" (version {run['dataset_version']})" if run.get("dataset_version") else ""
    lines.append(f"Dataset `{run['dataset']}`{version}, split by patient.")
    lines.append("")
  if data:
    columns = [("label", name) for name in ("normal", "abnormal")]
    for attribute in ("sex", "age", "site"):
      groups = sorted({g for counts in data.values() for g in counts.get(attribute, {})})
      columns += [(attribute, g) for g in groups]
    lines += [
      "| split | N | " + " | ".join(f"{a} {g}" for a, g in columns) + " |",
      "|---" * (2 + len(columns)) + "|",
    ]
    for split, counts in data.items():
      cells = [str(counts.get(a, {}).get(g, 0)) for a, g in columns]
      lines.append(f"| {split} | {counts['n']} | " + " | ".join(cells) + " |")
  else:
    lines.append("The training data's counts were not recorded in this metrics.json.")
  lines += ["", "## Training recipe", ""]
  recipe = [
    ("backbone", run.get("backbone")),
    ("mode", run.get("mode")),
    ("initial weights", run.get("weights_init")),
    ("fine-tuned from (the parent run's dataset)", (run.get("init_from") or {}).get("dataset")),
    ("image size (px)", run.get("image_size")),
    ("epochs (phase 1, or the one end-to-end phase)", run.get("epochs")),
    ("fine-tuning epochs (phase 2)", run.get("fine_tune_epochs")),
    ("cross-validation folds", run.get("folds") or None),
    ("seed", run.get("seed")),
    ("weights evaluated and exported", run.get("weights")),
  ]
  lines += [f"- {name}: {value}" for name, value in recipe if value is not None]
  return [*lines, ""]


def _results(key: str, result: dict, evaluated: dict, chosen: dict) -> list[str]:
  """Overall AUC, operating points with the split that chose them, calibration."""
  low, high = result["auc_ci95"]
  calibration = result["calibration"]
  lines = [
    "## Results",
    "",
    f"Evaluated on {_input(evaluated)}; thresholds chosen on {_input(chosen)} and applied"
    " unchanged.",
    "",
    f"- AUC {_f(result['auc'])} (95% CI {_f(low)}-{_f(high)}, stratified bootstrap) on"
    f" {result['n']} images ({result['n_positive']} abnormal).",
    f"- Calibration: ECE {_f(calibration['ece'])} over {calibration['n']} images in"
    f" {calibration['num_bins']} bins.",
    "",
    "| operating point | threshold | sensitivity | specificity | PPV | NPV | tp | fp | tn | fn |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, point in result["operating_points"].items():
    lines.append(
      f"| {_POINT_NAMES.get(name, name)} | {_f(point['threshold'], 4)} | "
      + " | ".join(_f(point[k]) for k in ("sensitivity", "specificity", "ppv", "npv"))
      + " | "
      + " | ".join(str(point[k]) for k in ("tp", "fp", "tn", "fn"))
      + " |"
    )
  if chosen["dataset"] != evaluated["dataset"]:
    lines += [
      "",
      f"**Cross-site:** the model was evaluated on {evaluated['dataset']}, a dataset it did"
      f" not train on, at the thresholds chosen on {chosen['dataset']}.",
    ]
  return [*lines, ""]


def _gap_cell(test: dict | None) -> str:
  """A gap's table cell: value, 95% CI and Holm-adjusted p (empty when it was not tested)."""
  if test is None:
    return ""
  low, high = test["ci95"]
  return (
    f"{_f(test['value'], sign=True)} ({_f(low, sign=True)} to {_f(high, sign=True)}),"
    f" p {_f(test['p_holm'])}"
  )


# How the card names each backbone (a run from before --backbone was InceptionV3).
_BACKBONE_NAMES = {
  "inception_v3": "InceptionV3",
  "densenet121": "DenseNet-121",
  "mobilenet_v3_small": "MobileNetV3-Small",
}


def _subgroups(result: dict) -> list[str]:
  """Each subgroup's figures and the verdict, in the words of report_text."""
  figures = result.get("subgroups")
  if figures is None:
    return []
  lines = [
    "## Subgroups",
    "",
    "At the thresholds above; sensitivity and specificity at the WHO triage point. Each gap is"
    " the group's figure minus the rest of the split's, with a 95% CI from a bias-corrected and"
    " accelerated bootstrap and a p-value from a permutation test (groups reassigned within"
    " each class), Holm-adjusted over every gap in this table: a group is named only when an"
    f" adjusted p is below {metrics.FAMILY_ALPHA}, so the chance of naming any group where none"
    f" differs is at most about {metrics.FAMILY_ALPHA:.0%}. A group with fewer than"
    f" {metrics.MIN_PER_CLASS} images of either class is too few to say anything about.",
    "",
    "| attribute | group | N | abnormal | AUC (95% CI) | sensitivity | specificity | ECE |"
    " AUC gap | sensitivity gap | specificity gap |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for attribute, groups in figures.items():
    for name, group in groups.items():
      cells = [attribute, name, str(group["n"]), str(group["n_positive"])]
      if "same_as" in group:
        cells += [f"the same images as {group['same_as']}", "", "", "", "", "", ""]
      elif group["too_few"]:
        cells += ["too few", "", "", "", "", "", ""]
      else:
        low, high = group["auc_ci95"]
        triage = group["operating_points"][metrics.TRIAGE]
        gaps = group["gaps"]
        cells += [
          f"{_f(group['auc'])} ({_f(low)}-{_f(high)})",
          _f(triage["sensitivity"]),
          _f(triage["specificity"]),
          _f(group["ece"]),
          *(
            [_gap_cell(gaps["tests"].get(m)) for m in metrics.GAP_MEASURES]
            if gaps
            else ["rest too few", "", ""]
          ),
        ]
      lines.append("| " + " | ".join(cells) + " |")
  found = metrics.differing(figures)
  lines.append("")
  if found:
    for attribute, name, group in found:
      lines.append(
        f"- {attribute} {name} is **{group['differs']}** than the rest of the split"
        f" ({report_text.gap_text(group)})."
      )
  elif not metrics.any_compared(figures):
    lines.append(report_text.NOTHING_COMPARED)
  else:
    lines.append(report_text.NONE_WEAKER)
  return [*lines, ""]


def _ood(run: dict) -> list[str]:
  """The out-of-distribution detector the export carries."""
  detector = run.get("ood")
  if not detector:
    return []
  return [
    "## Out-of-distribution detector",
    "",
    f"Every served image is flagged when its pooled features' Mahalanobis distance to the"
    f" training images' exceeds {_f(detector['threshold'], 2)}, the"
    f" {_f(detector['quantile'], 2)} quantile over the {detector['n_train']} training and"
    f" {detector['n_validation']} validation images; also when it is colourful or far from"
    " square. A flagged image's score is not to be trusted.",
    "",
  ]


def _limitations(run: dict, evaluated: dict, chosen: dict, result: dict) -> list[str]:
  """What the figures do not say."""
  sites = run.get("dataset", evaluated["dataset"]).split("+")
  lines = ["## Known limitations", ""]
  if len(sites) == 1:
    lines.append(
      f"- Trained on one site ({sites[0]}): its figures hold for images like that site's"
      " (scanner, population, prevalence), not for others."
    )
  lines += [
    f"- Small numbers: {result['n']} evaluated images; read every figure with its CI.",
    "- A model trained on the images make_dummy_data generates (the demo, the tests) shows"
    " that the pipeline works, not clinical skill.",
    "- Subgroups are those the clinical readings record (sex, age) and the site; others"
    " (HIV status, prior TB, scanner) are not known here.",
  ]
  if chosen == evaluated:
    lines.append("- The thresholds were chosen on the evaluated images themselves.")
  return [*lines, ""]


def _input(described: dict) -> str:
  folds = f" folds {described['folds']} of {described['num_folds']}" if "folds" in described else ""
  return f"{described['dataset']} {described['split']}{folds} (N={described['n']})"


def _f(value, digits: int = 3, sign: bool = False) -> str:
  """A figure as printed: fixed decimals, 'n/a' for a null (NaN) one."""
  if value is None:
    return "n/a"
  return f"{value:{'+' if sign else ''}.{digits}f}"


def _y(value) -> str:
  """A YAML number, or null."""
  return "null" if value is None else repr(float(value))


def _q(text: str) -> str:
  """A YAML string (JSON's quoting is YAML's)."""
  return json.dumps(text)
