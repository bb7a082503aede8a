r"""Chooses a site's own threshold from its scored films (txr-calibrate), without TensorFlow.

  txr-calibrate --scores=scores.csv --model=run/export --prevalence=0.05 --out=site/
      [--labels=labels.csv] [--target_sensitivity=0.9 | --max_referral_rate=0.1]

Reads a scores file (`txr-predict --format=csv` or `txr-predict-lite
--format=csv` output, or a `scores_<split>.csv` of txr-evaluate) and each
film's reference label (a labels.csv `file,label`, else the film's class
folder or `_0`/`_1` name, as the local_cxr builder reads them), and writes to
--out: `threshold_table.csv` (every threshold: sensitivity and specificity
with 95% CIs, and per 1,000 people screened at --prevalence the number
referred, found and missed, PPV, NPV, tests per case found), `site_profile.json`
(the chosen threshold, bound to --model's fingerprint, for `--site` of both
predictors) and `CALIBRATION.md` (with `roc.png` when matplotlib is there).
Every figure is computed on the films given. Exit 2 for a usage error.
"""

import argparse
import csv
import datetime
import io
import os
import sys

from txr_lite import contract
from txr_lite import site_calibration
from txr_lite import site_labels

PROFILE, TABLE, CARD, ROC = "site_profile.json", "threshold_table.csv", "CALIBRATION.md", "roc.png"
NEAR = 3  # Table rows printed on each side of the chosen one.


def read_scores(path: str) -> tuple[list[dict], int]:
  """The scored films of a scores file: [{'file', 'score', 'label' (txr-evaluate's, or None)}].

  Returns:
    (the films, how many rows were refused files, without a score).

  Raises:
    ValueError: naming the file, for another kind of CSV.
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = list(csv.DictReader(f))
  columns = set(rows[0]) if rows else set()
  films, refused = [], 0
  if {"filename", "label", "score"} <= columns:  # txr-evaluate's scores_<split>.csv
    for row in rows:
      films.append({"file": row["filename"], "score": float(row["score"]),
                    "label": int(row["label"])})  # fmt: skip
  elif {"file", "probability"} <= columns:  # a predictor's --format=csv
    for row in rows:
      if row.get("error") or not row["probability"]:
        refused += 1
        continue
      films.append({"file": row["file"], "score": float(row["probability"]), "label": None})
  else:
    raise ValueError(
      f"{path}: not a scores file: give txr-predict's or txr-predict-lite's --format=csv"
      " output, or txr-evaluate's scores_<split>.csv."
    )
  if not films:
    raise ValueError(f"{path}: no scored film in it.")
  return films, refused


def read_labels(path: str) -> dict[str, dict]:
  """{file: its row (label parsed)} of a labels.csv (`file,label`, optional sex, age...)."""
  with open(path, encoding="utf-8-sig") as f:
    rows = site_labels.read_rows(f.read(), path)
  return {
    row["file"]: {**row, "label": site_labels.parse_label(
      row["label"], f"{path} row {row['_row']} ({row['file']})"
    )}
    for row in rows
  }  # fmt: skip


def _row_of(name: str, labels: dict[str, dict], by_base: dict[str, list]) -> dict | None:
  """The labels.csv row of a scored file: the same path, or the one row whose path ends it.

  `by_base` ({file name: [(path, row)]}) keeps the search to rows of the same file name.
  """
  name = name.replace("\\", "/")
  if name in labels:
    return labels[name]
  candidates = by_base.get(os.path.basename(name), [])
  ends = [row for file, row in candidates if name.endswith("/" + file.lstrip("./"))]
  return ends[0] if len(ends) == 1 else None


def attach_labels(films: list[dict], labels: dict[str, dict] | None) -> list[dict]:
  """Each film with its reference label (and the labels.csv row's sex and age).

  Raises:
    ValueError: naming the first film without a label, and how many lack one.
  """
  missing, by_base = [], {}
  for file, row in (labels or {}).items():
    by_base.setdefault(os.path.basename(file), []).append((file, row))
  for film in films:
    row = _row_of(film["file"], labels, by_base) if labels is not None else None
    if row is not None:
      film.update(label=row["label"], sex=row.get("sex", ""), age=row.get("age", ""))
    elif film["label"] is None and labels is None:
      film["label"] = site_labels.label_from_folders(film["file"])
      if film["label"] is None:
        film["label"] = site_labels.label_from_suffix(film["file"])
    elif labels is not None:
      film["label"] = None
    if film["label"] is None:
      missing.append(film["file"])
  if missing:
    raise ValueError(
      f"{missing[0]}: no reference label ({len(missing)} film(s) lack one): give --labels="
      "labels.csv (file,label), or score films in normal/ and abnormal/ folders or with _0/_1"
      " names."
    )
  return films


def subgroup_lines(films: list[dict], threshold: float) -> list[str]:
  """Sensitivity and specificity at the threshold per sex and age (under 15, 15+), with CIs."""
  groups = {}
  for film in films:
    sex = film.get("sex", "").lower()
    if sex:
      groups.setdefault(f"sex {sex}", []).append(film)
    age = film.get("age", "")
    if age.isdigit():
      groups.setdefault("age under 15" if int(age) < 15 else "age 15+", []).append(film)
  lines = []
  for name, members in sorted(groups.items()):
    tp = sum(f["label"] and f["score"] >= threshold for f in members)
    pos = sum(f["label"] for f in members)
    tn = sum(not f["label"] and f["score"] < threshold for f in members)
    neg = len(members) - pos
    parts = [f"{name}: N={len(members)} ({pos} abnormal)"]
    for what, k, n in (("sensitivity", tp, pos), ("specificity", tn, neg)):
      if n:
        low, high = site_calibration.wilson(k, n)
        parts.append(f"{what} {k / n:.3f} ({low:.3f}-{high:.3f})")
    lines.append(", ".join(parts))
  return lines


def _fmt(name: str, value) -> str:
  """A table cell: the threshold exact (it is what --site applies), other shares to 4 places."""
  if name == "threshold":
    return repr(value)
  return f"{value:.4f}" if isinstance(value, float) else str(value)


def table_text(rows: list[site_calibration.Row], chosen: site_calibration.Row) -> str:
  """The rows near the chosen one, aligned, the chosen marked."""
  at = rows.index(chosen)
  shown = rows[max(0, at - NEAR) : at + NEAR + 1]
  head = ["", "threshold", "sens", "(95% CI)", "spec", "(95% CI)", "referred", "found",
          "missed", "PPV", "NPV", "tests/case"]  # fmt: skip
  lines = ["  ".join(f"{h:>10}" for h in head)]
  for row in shown:
    per = row.per_thousand()
    (s_low, s_high), (c_low, c_high) = row.sensitivity_ci, row.specificity_ci
    cells = ["->" if row is chosen else "", f"{row.threshold:.4f}", f"{row.sensitivity:.3f}",
             f"{s_low:.2f}-{s_high:.2f}", f"{row.specificity:.3f}", f"{c_low:.2f}-{c_high:.2f}",
             f"{per['referred']:.0f}", f"{per['found']:.1f}", f"{per['missed']:.1f}",
             f"{per['ppv']:.3f}", f"{per['npv']:.4f}",
             f"{per['tests_per_case_found']:.1f}"]  # fmt: skip
    lines.append("  ".join(f"{c:>10}" for c in cells))
  return "\n".join(lines)


def _roc_png(rows, chosen, path: str) -> bool:
  """Draws the ROC curve with the chosen point; False without matplotlib."""
  try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
  except ImportError:
    return False
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.plot([0] + [1 - r.specificity for r in rows], [0] + [r.sensitivity for r in rows])
  ax.plot([1 - chosen.specificity], [chosen.sensitivity], "o", label="this site's threshold")
  ax.plot([0, 1], [0, 1], ":", color="grey")
  ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def card_text(profile: contract.SiteProfile, chosen, warning, subgroups, roc: bool) -> str:
  """CALIBRATION.md: what was chosen, on what, and what it means per 1,000 people screened."""
  per = chosen.per_thousand()
  (s_est, s_low, s_high), (c_est, c_low, c_high) = profile.sensitivity, profile.specificity
  share = profile.expected_abnormal_share
  lines = [
    "# Site calibration", "",
    f"- Model: `{profile.model['path']}` ({profile.model['fingerprint']})",
    f"- Films: {profile.n} ({profile.n_abnormal} abnormal), scores from `{profile.scores}`",
    f"- Rule: {profile.rule}",
    f"- Threshold: **{profile.threshold:.4f}** (P(TB) at or above it: abnormal)",
    f"- Sensitivity {s_est:.3f} (95% CI {s_low:.3f}-{s_high:.3f}), specificity {c_est:.3f}"
    f" ({c_low:.3f}-{c_high:.3f}), on these films",
    f"- At a prevalence of {profile.prevalence:g}, per 1,000 people screened: {per['referred']:.0f}"
    f" referred for a confirmatory test, {per['found']:.1f} cases found, {per['missed']:.1f}"
    f" missed; PPV {per['ppv']:.3f}, NPV {per['npv']:.4f}, {per['tests_per_case_found']:.1f}"
    " tests per case found",
    f"- Expected share read abnormal: {share[0]:.3f} (bounds {share[1]:.3f}-{share[2]:.3f});"
    " the predictors warn when a day's share falls outside them",
    f"- Made {profile.date}",
  ]  # fmt: skip
  if warning:
    lines += ["", f"**Warning:** {warning}"]
  if subgroups:
    lines += ["", "## At this threshold, by group", "", *[f"- {line}" for line in subgroups]]
  if roc:
    lines += ["", f"![ROC curve with the chosen threshold]({ROC})"]
  lines += ["", "Every figure is from the films above, none from the training run."]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  """Writes the threshold table, the site profile and the card; prints the chosen point."""
  parser = argparse.ArgumentParser(prog="txr-calibrate", description=__doc__.splitlines()[0])
  parser.add_argument("--scores", required=True, help="The scored films (CSV).")
  parser.add_argument(
    "--model", required=True, help="The model that scored them: its export/ or .tflite file."
  )
  parser.add_argument(
    "--prevalence", type=float, required=True, help="The share screened who have TB (0-1)."
  )
  parser.add_argument("--out", required=True, help="Folder for the table, profile and card.")
  parser.add_argument("--labels", help="labels.csv (file,label; optional sex, age).")
  rule = parser.add_mutually_exclusive_group()
  rule.add_argument(
    "--target_sensitivity", type=float, help="Highest specificity at this sensitivity (0.90)."
  )
  rule.add_argument(
    "--max_referral_rate", type=float, help="Highest sensitivity referring at most this share."
  )
  args = parser.parse_args(argv)
  for name in ("target_sensitivity", "max_referral_rate"):
    value = getattr(args, name)
    if value is not None and not 0 < value <= 1:
      parser.error(f"--{name}={value}: give a share between 0 and 1.")
  if not os.path.exists(args.model):
    parser.error(f"--model={args.model}: no such export folder or .tflite file.")
  try:
    films, refused = read_scores(args.scores)
    labels = read_labels(args.labels) if args.labels else None
    films = attach_labels(films, labels)
    rows = site_calibration.table([f["score"] for f in films], [f["label"] for f in films],
                                  args.prevalence)  # fmt: skip
    chosen_rule = site_calibration.Rule(
      args.target_sensitivity or site_calibration.TRIAGE_SENSITIVITY, args.max_referral_rate
    )
    chosen = chosen_rule.choose(rows)
  except (OSError, ValueError) as e:
    parser.error(str(e).splitlines()[0])
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, TABLE), "w", newline="") as f:
    writer = csv.DictWriter(f, site_calibration.COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _fmt(k, v) for k, v in row.as_dict().items()})
  profile = contract.SiteProfile(
    model={"fingerprint": contract.model_fingerprint(args.model), "path": args.model},
    threshold=chosen.threshold, rule=chosen_rule.text(), n=len(films),
    n_abnormal=chosen.tp + chosen.fn, prevalence=args.prevalence,
    sensitivity=[chosen.sensitivity, *chosen.sensitivity_ci],
    specificity=[chosen.specificity, *chosen.specificity_ci],
    expected_abnormal_share=[chosen.referral_rate, *chosen.referral_rate_ci],
    date=datetime.date.today().isoformat(), scores=args.scores,
  )  # fmt: skip
  with open(os.path.join(args.out, PROFILE), "w") as f:
    f.write(profile.to_json() + "\n")
  warning = chosen_rule.warning(chosen)
  subgroups = subgroup_lines(films, chosen.threshold)
  roc = _roc_png(rows, chosen, os.path.join(args.out, ROC))
  with open(os.path.join(args.out, CARD), "w") as f:
    f.write(card_text(profile, chosen, warning, subgroups, roc))
  out = io.StringIO()
  print(f"txr-calibrate: {len(films)} films ({profile.n_abnormal} abnormal)"
        + (f"; {refused} refused file(s) left out" if refused else "")
        + f", prevalence {args.prevalence:g}; per 1,000 people screened:", file=out)  # fmt: skip
  print(table_text(rows, chosen), file=out)
  print(f"Chosen ({chosen_rule.text()}): threshold {chosen.threshold:.4f}.", file=out)
  for line in subgroups:
    print(f"  {line}", file=out)
  if warning:
    print(f"Warning: {warning}", file=out)
  print(f"Wrote {os.path.join(args.out, PROFILE)} (use it with --site), {TABLE} and {CARD}.",
        file=out)  # fmt: skip
  sys.stdout.write(out.getvalue())
  return 0


def run():
  """Console-script entry point (txr-calibrate)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
