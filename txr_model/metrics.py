"""Clinical screening metrics: ROC AUC with bootstrap CI, operating points and rates.

Conventions: labels are 0/1 (1 = TB/abnormal = positive), scores are probabilities of the
positive class, and a case is predicted positive when score >= threshold. Pure numpy.
"""

import math
import statistics

import numpy as np

from txr_lite import contract

# WHO target product profile for a TB triage test: minimum sensitivity and specificity.
WHO_TRIAGE = {"sensitivity": 0.90, "specificity": 0.70}

# The operating points' names (their keys in a summary's "operating_points", and in an
# export's metadata): Youden's J, and the WHO triage point, the highest specificity with
# sensitivity >= WHO_TRIAGE's.
YOUDEN, TRIAGE, OPERATING_POINTS = contract.YOUDEN, contract.TRIAGE, contract.OPERATING_POINTS

# The fewest cases of either class a subgroup needs for figures; a smaller one is "too few".
MIN_PER_CLASS = 10
# txr-train's and txr-evaluate's default --age_bands: each band's first and last year of age.
AGE_BANDS = "0-17,18-39,40-59,60+"
UNKNOWN = "unknown"  # The group of a case whose attribute was not recorded.

# Upper bound on the elements of one (resamples x cases) block in the bootstrap.
_BOOTSTRAP_BLOCK_ELEMENTS = 2_000_000


def _check(labels, scores):
  """Validates and converts inputs: 1-D 0/1 labels (as bool) and finite float scores."""
  y = np.asarray(labels)
  s = np.asarray(scores, dtype=np.float64)
  if y.ndim != 1 or s.ndim != 1:
    raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
  if y.shape != s.shape:
    raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
  if y.size and not np.isin(y, (0, 1)).all():
    raise ValueError("labels must be 0/1 (1 = positive)")
  if not np.isfinite(s).all():
    raise ValueError("scores must be finite")
  return y.astype(bool), s


def _counts(y, s):
  """Cumulative (tp, fp) at each distinct score, descending, with the score thresholds.

  Shared by the curves and operating-point searches so they all use the same steps.
  """
  order = np.argsort(-s, kind="stable")
  s_desc = s[order]
  y_desc = y[order]
  # Last index of each run of equal scores: tied cases move across the threshold together.
  ends = np.flatnonzero(np.r_[s_desc[1:] != s_desc[:-1], True]) if s.size else np.array([], int)
  tps = np.cumsum(y_desc, dtype=np.int64)[ends]
  fps = (ends + 1) - tps
  return tps, fps, s_desc[ends]


def _divide(num, den):
  """Returns num / den as float64, nan where den is 0 (no warnings)."""
  num = np.asarray(num, dtype=np.float64)
  if den == 0:
    return np.full(num.shape, np.nan)
  return num / den


def roc_curve(labels, scores):
  """ROC points (fpr, tpr, thresholds), thresholds descending from +inf over distinct scores.

  Same convention as sklearn's roc_curve(drop_intermediate=False); a missing class gives nan rates.
  """
  y, s = _check(labels, scores)
  tps, fps, thresholds = _counts(y, s)
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  tps = np.r_[0, tps]
  fps = np.r_[0, fps]
  return _divide(fps, n_neg), _divide(tps, n_pos), np.r_[np.inf, thresholds]


def _midranks(x):
  """1-based ranks of x ascending, ties given their average rank (for Mann-Whitney)."""
  order = np.argsort(x, kind="stable")
  xs = x[order]
  new = np.r_[True, xs[1:] != xs[:-1]]
  starts = np.flatnonzero(new)
  stops = np.r_[starts[1:], x.size]
  ranks = np.empty(x.size, dtype=np.float64)
  ranks[order] = ((starts + 1 + stops) / 2.0)[np.cumsum(new) - 1]
  return ranks


def roc_auc(labels, scores):
  """Area under the ROC curve: P(score_pos > score_neg) with ties counted 0.5 (Mann-Whitney).

  Returns nan when only one class is present, so callers can report rather than crash.
  """
  y, s = _check(labels, scores)
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  rank_sum = _midranks(s)[y].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_curve(labels, scores):
  """Precision-recall points (precision, recall, thresholds) for plotting.

  One point per distinct score, thresholds descending; recall is nan when there are no positives.
  """
  y, s = _check(labels, scores)
  tps, fps, thresholds = _counts(y, s)
  precision = tps / np.maximum(tps + fps, 1)  # tp + fp >= 1 at every distinct score
  return precision.astype(np.float64), _divide(tps, int(y.sum())), thresholds


def _resample_aucs(pos, neg, pos_idx, neg_idx):
  """AUC of each bootstrap resample (rows of pos_idx/neg_idx index pos/neg), without a loop.

  Counts, per resample, the resampled negatives below/equal to each positive via cumulative sums.
  """
  n_res, n_neg = neg_idx.shape
  n_pos = pos_idx.shape[1]
  order = np.argsort(neg, kind="stable")
  neg_sorted = neg[order]
  position = np.empty(n_neg, dtype=np.int64)
  position[order] = np.arange(n_neg)
  # counts[b, k]: times the k-th smallest negative was drawn in resample b.
  flat = (position[neg_idx] + n_neg * np.arange(n_res)[:, None]).ravel()
  counts = np.bincount(flat, minlength=n_res * n_neg).reshape(n_res, n_neg)
  cum = np.zeros((n_res, n_neg + 1), dtype=np.int64)
  np.cumsum(counts, axis=1, out=cum[:, 1:])
  below = np.searchsorted(neg_sorted, pos, side="left")
  below_or_equal = np.searchsorted(neg_sorted, pos, side="right")
  # wins[b, i]: resampled negatives beaten by original positive i (ties 0.5), in resample b.
  wins = cum[:, below] + 0.5 * (cum[:, below_or_equal] - cum[:, below])
  return np.take_along_axis(wins, pos_idx, axis=1).sum(axis=1) / (n_pos * n_neg)


def _bootstrap_aucs(pos, neg, n_resamples, rng):
  """AUCs of n_resamples stratified resamples, drawn from rng in fixed-size blocks."""
  n = pos.size + neg.size
  block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // n)
  out = []
  for start in range(0, n_resamples, block):
    size = min(block, n_resamples - start)
    pos_idx = rng.integers(0, pos.size, size=(size, pos.size))
    neg_idx = rng.integers(0, neg.size, size=(size, neg.size))
    out.append(_resample_aucs(pos, neg, pos_idx, neg_idx))
  return np.concatenate(out) if out else np.array([], dtype=np.float64)


def bootstrap_auc_ci(labels, scores, *, n_resamples=2000, confidence=0.95, seed=0):
  """Percentile CI of the AUC from a stratified bootstrap (classes resampled separately).

  Seeded with numpy's default_rng(seed) so it reproduces exactly; (nan, nan) with one class.
  """
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if n_resamples < 1:
    raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
  y, s = _check(labels, scores)
  pos, neg = s[y], s[~y]
  if pos.size == 0 or neg.size == 0:
    return float("nan"), float("nan")
  aucs = _bootstrap_aucs(pos, neg, n_resamples, np.random.default_rng(seed))
  alpha = 1.0 - confidence
  low, high = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
  return float(low), float(high)


def confusion(labels, scores, threshold):
  """Confusion counts {tp, fp, tn, fn} (ints) when score >= threshold is called positive."""
  y, s = _check(labels, scores)
  predicted = s >= threshold
  tp = int(np.sum(predicted & y))
  fp = int(np.sum(predicted & ~y))
  fn = int(np.sum(~predicted & y))
  tn = int(np.sum(~predicted & ~y))
  return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def rates(conf):
  """Accuracy, sensitivity, specificity, PPV and NPV from confusion counts (nan if undefined)."""
  tp, fp, tn, fn = conf["tp"], conf["fp"], conf["tn"], conf["fn"]
  return {
    "accuracy": float(_divide(tp + tn, tp + fp + tn + fn)),
    "sensitivity": float(_divide(tp, tp + fn)),
    "specificity": float(_divide(tn, tn + fp)),
    "ppv": float(_divide(tp, tp + fp)),
    "npv": float(_divide(tn, tn + fn)),
  }


def _finite_counts(labels, scores):
  """(tps, fps, thresholds, n_pos, n_neg) over finite thresholds; raises if a class is missing."""
  y, s = _check(labels, scores)
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError("choosing a threshold needs both positive and negative cases")
  tps, fps, thresholds = _counts(y, s)
  return tps, fps, thresholds, n_pos, n_neg


def youden_threshold(labels, scores):
  """Threshold maximising Youden's J = sensitivity + specificity - 1 (ties: higher threshold).

  J is compared as the exact integer tp * n_neg - fp * n_pos, so float rounding cannot break ties.
  """
  tps, fps, thresholds, n_pos, n_neg = _finite_counts(labels, scores)
  j_scaled = tps * n_neg - fps * n_pos
  return float(thresholds[int(np.argmax(j_scaled))])  # argmax: first = highest threshold


def triage_threshold(labels, scores, min_sensitivity=WHO_TRIAGE["sensitivity"]):
  """WHO triage operating point: highest specificity with sensitivity >= min_sensitivity.

  Among thresholds of equal specificity (equal false positives) the one with
  the highest sensitivity wins: catching more TB costs no specificity there.
  The lowest score (sensitivity 1) guarantees one exists.
  """
  tps, fps, thresholds, n_pos, _ = _finite_counts(labels, scores)
  eligible = tps / n_pos >= min_sensitivity
  eligible[-1] = True  # the lowest score calls everything positive: sensitivity 1
  fps = np.where(eligible, fps, np.iinfo(np.int64).max)
  # tps rise as thresholds fall, so the last of the fewest-fp thresholds has the most.
  return float(thresholds[np.flatnonzero(fps == fps.min())[-1]])


def meets_triage_target(rates_dict):
  """Whether sensitivity and specificity both reach the WHO triage targets (nan fails)."""
  return bool(
    rates_dict["sensitivity"] >= WHO_TRIAGE["sensitivity"]
    and rates_dict["specificity"] >= WHO_TRIAGE["specificity"]
  )


def operating_point(labels, scores, threshold):
  """{"threshold", tp, fp, tn, fn, accuracy, ...} at one threshold, as plain JSON-ready values."""
  conf = confusion(labels, scores, threshold)
  return {"threshold": float(threshold), **conf, **rates(conf)}


def calibration(labels, scores, num_bins=10):
  """Expected calibration error (ECE) and the reliability diagram's bins.

  Scores are binned into `num_bins` equal-width bins over [0, 1] (the last
  bin includes 1). ECE is the mean, over cases, of |mean score - fraction
  positive| of their bin: 0 when, in every bin, the predicted probability
  matches how often the cases are abnormal. It is biased upwards on small N
  (each bin's fraction is noisy), so read it with its N.

  Args:
    labels: 0/1 labels.
    scores: probabilities in [0, 1].
    num_bins: equal-width bins.

  Returns:
    A JSON-ready dict: ece (nan without cases), n, num_bins, and bins (one
    per bin: low, high, n, mean_score, fraction_positive; the means are None
    for an empty bin).
  """
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  y, s = _check(labels, scores)
  if s.size and (s.min() < 0 or s.max() > 1):
    raise ValueError("calibration needs probabilities in [0, 1]")
  index = np.minimum((s * num_bins).astype(np.int64), num_bins - 1)
  counts = np.bincount(index, minlength=num_bins)
  score_sums = np.bincount(index, weights=s, minlength=num_bins)
  positives = np.bincount(index, weights=y.astype(np.float64), minlength=num_bins)
  bins, gap = [], 0.0
  for b in range(num_bins):
    n = int(counts[b])
    mean_score = float(score_sums[b] / n) if n else None
    fraction = float(positives[b] / n) if n else None
    if n:
      gap += n * abs(mean_score - fraction)
    bins.append(
      {
        "low": b / num_bins,
        "high": (b + 1) / num_bins,
        "n": n,
        "mean_score": mean_score,
        "fraction_positive": fraction,
      }
    )
  return {
    "ece": float(gap / s.size) if s.size else float("nan"),
    "n": int(s.size),
    "num_bins": num_bins,
    "bins": bins,
  }


def proportional_energy(heatmaps, masks) -> dict:
  """The share of each heat map's energy inside its mask, averaged (mednet's proportional energy).

  A Grad-CAM map whose energy lies outside the lungs is a model looking at
  the wrong thing (markers, borders, text), whatever its AUC.

  Args:
    heatmaps: [n, h, w] non-negative heat maps.
    masks: [n, h, w] booleans (the lung mask, in the heat map's frame).

  Returns:
    {'mean', 'sd', 'n', 'n_all_zero', 'mask_share'}: images whose heat map is
    all zero have no share and are left out of `n`, but counted in
    `n_all_zero`, so a figure that silently drops images cannot pass for one
    over all of them; `mask_share` is the masks' mean share of the frame, what
    a uniform heat map would score (the chance level to compare `mean` with).
  """
  h = np.asarray(heatmaps, np.float64)
  m = np.asarray(masks, bool)
  total = h.reshape(len(h), -1).sum(axis=1)
  inside = (h * m).reshape(len(h), -1).sum(axis=1)
  shares = inside[total > 0] / total[total > 0]
  out = {"n": int(shares.size), "n_all_zero": int(np.sum(total <= 0))}
  if not shares.size:
    return {"mean": None, "sd": None, **out, "mask_share": None}
  return {
    "mean": float(shares.mean()),
    "sd": float(shares.std()),
    **out,
    "mask_share": float(m[total > 0].mean()),
  }


def summarize(
  val_labels,
  val_scores,
  test_labels,
  test_scores,
  *,
  seed=0,
  n_resamples=2000,
  groups=None,
  attributes=None,
):
  """Summarises a test split: AUC with its 95% bootstrap CI, two operating points, calibration.

  The operating points' thresholds (Youden, WHO triage) are chosen on the
  VALIDATION split only and applied unchanged to the test split.

  Args:
    val_labels: 0/1 labels of the validation split.
    val_scores: the model's scores of the validation split.
    test_labels: 0/1 labels of the evaluated split.
    test_scores: the model's scores of the evaluated split.
    seed: the bootstrap's seed.
    n_resamples: bootstrap resamples.
    groups: optional, a name per evaluated case (such as its dataset). With
      two or more names, "by_group" holds the same summary for each group's
      cases, at the same thresholds.
    attributes: optional, {attribute: a group name per evaluated case}:
      adds "subgroups" (see `subgroups`), at the same thresholds.

  Returns:
    A JSON-ready dict: auc, auc_ci95, n, n_positive, operating_points,
    calibration, validation_auc, by_group when `groups` has two or more names,
    and subgroups with `attributes`.
  """
  y_test, s_test = _check(test_labels, test_scores)
  youden = youden_threshold(val_labels, val_scores)
  triage = triage_threshold(val_labels, val_scores)
  low, high = bootstrap_auc_ci(y_test, s_test, n_resamples=n_resamples, seed=seed)
  triage_point = operating_point(y_test, s_test, triage)
  triage_point["meets_who_triage"] = meets_triage_target(triage_point)
  out = {
    "auc": roc_auc(y_test, s_test),
    "auc_ci95": [low, high],
    "n": int(y_test.size),
    "n_positive": int(y_test.sum()),
    "operating_points": {
      YOUDEN: operating_point(y_test, s_test, youden),
      TRIAGE: triage_point,
    },
    "calibration": calibration(y_test, s_test),
    "validation_auc": roc_auc(val_labels, val_scores),
  }
  if attributes is not None:
    thresholds = {YOUDEN: youden, TRIAGE: triage}
    out["subgroups"] = subgroups(
      y_test, s_test, thresholds, attributes, seed=seed, n_resamples=n_resamples
    )
  for name, mask in _group_masks(groups, y_test.size):
    out.setdefault("by_group", {})[name] = summarize(
      val_labels, val_scores, y_test[mask], s_test[mask], seed=seed, n_resamples=n_resamples
    )
  return out


def _group_masks(groups, size):
  """(name, boolean mask) per distinct group, sorted; nothing with fewer than two groups."""
  if groups is None:
    return []
  groups = np.asarray(groups).astype(str)
  if groups.shape != (size,):
    raise ValueError(f"groups must name each of the {size} cases, got shape {groups.shape}")
  names = sorted(set(groups.tolist()))
  return [(name, groups == name) for name in names] if len(names) > 1 else []


def cross_validation_summary(fold_aucs):
  """Per-fold AUCs with their mean and sample sd (ddof=1), ignoring nan folds."""
  values = [float(v) for v in fold_aucs]
  finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
  mean = float(finite.mean()) if finite.size else float("nan")
  sd = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
  return {"fold_aucs": values, "mean": mean, "sd": sd}


def pooled_out_of_fold(
  fold_reports, labels, scores, *, seed=0, n_resamples=2000, groups=None, attributes=None
):
  """The pooled out-of-fold summary of a cross-validation: every case scored once.

  Each case's score comes from the fold model that did not train on it, so
  the pooled AUC (with its bootstrap CI over all N cases) is an honest
  estimate that, unlike the mean of per-fold AUCs, does not rest on K small
  test folds. Scores of different fold models share one ranking here, which
  assumes the models are calibrated alike; the per-fold mean +/- sd beside it
  does not. The operating points add up each fold's confusion counts at that
  fold's own thresholds (chosen on its validation fold).

  Args:
    fold_reports: each fold's `summarize` output on its held-out fold.
    labels: 0/1 labels of every case, all folds together.
    scores: their out-of-fold scores.
    seed: the bootstrap's seed.
    n_resamples: bootstrap resamples.
    groups: optional, a name per case (its dataset): adds by_group.
    attributes: optional, {attribute: a group name per case}: adds
      "subgroups", each case at its own fold's thresholds (the cases are in
      fold order, as `fold_reports`).

  Returns:
    A JSON-ready dict: auc, auc_ci95, n, n_positive, operating_points
    (summed counts and their rates), calibration; by_group when `groups` has
    two or more names; subgroups with `attributes`.
  """
  y, s = _check(labels, scores)
  n_folds_cases = sum(r["n"] for r in fold_reports)
  if n_folds_cases != y.size:
    raise ValueError(f"{y.size} pooled cases, but the folds hold {n_folds_cases}")

  def pooled(reports, y, s):
    low, high = bootstrap_auc_ci(y, s, n_resamples=n_resamples, seed=seed)
    points = {}
    for name in OPERATING_POINTS:
      folds = [r["operating_points"][name] for r in reports]
      conf = {k: sum(point[k] for point in folds) for k in ("tp", "fp", "tn", "fn")}
      points[name] = {"thresholds": [p["threshold"] for p in folds], **conf, **rates(conf)}
    points[TRIAGE]["meets_who_triage"] = meets_triage_target(points[TRIAGE])
    out = {
      "auc": roc_auc(y, s),
      "auc_ci95": [low, high],
      "n": int(y.size),
      "n_positive": int(y.sum()),
      "operating_points": points,
      "calibration": calibration(y, s),
    }
    if sum(points[TRIAGE][k] for k in ("tp", "fp", "tn", "fn")) != y.size:
      del out["operating_points"]  # Some fold's report does not cover these cases.
    return out

  out = pooled(fold_reports, y, s)
  for name, mask in _group_masks(groups, y.size):
    reports = [r["by_group"][name] for r in fold_reports if name in r.get("by_group", {})]
    out.setdefault("by_group", {})[name] = pooled(reports, y[mask], s[mask])
  if attributes is not None:
    sizes = [r["n"] for r in fold_reports]
    thresholds = {
      point: np.repeat([r["operating_points"][point]["threshold"] for r in fold_reports], sizes)
      for point in OPERATING_POINTS
    }
    out["subgroups"] = subgroups(y, s, thresholds, attributes, seed=seed, n_resamples=n_resamples)
  return out


def parse_age_bands(text: str) -> list[tuple[str, int, float]]:
  """Parses --age_bands: `0-17,18-39,40-59,60+`, contiguous from 0, the last open-ended.

  Args:
    text: comma-separated bands, `<first>-<last>` years, the last `<first>+`.

  Returns:
    [(name, first year, last year (inf for the last))].

  Raises:
    ValueError: saying what is wrong, for bands that leave an age out or overlap.
  """
  bands, expected = [], 0
  parts = [p.strip() for p in text.split(",")]
  if "" in parts:
    raise ValueError(f"an empty band in {text!r}: remove the extra comma")
  for i, part in enumerate(parts):
    last = i == len(parts) - 1
    try:
      if last:
        if not part.endswith("+"):
          raise ValueError
        first, end = int(part[:-1]), math.inf
      else:
        first, end = (int(x) for x in part.split("-"))
    except ValueError:
      raise ValueError(
        f"age band {part!r}: expected <first>-<last> years, and <first>+ for the last band"
        f" (such as {AGE_BANDS})"
      ) from None
    if first != expected or end < first:
      raise ValueError(
        f"age band {part!r}: bands must start at 0 and follow each other without gap or"
        f" overlap (expected one starting at {expected}), such as {AGE_BANDS}"
      )
    bands.append((part, first, end))
    expected = end + 1
  return bands


def age_bands_of(ages, bands) -> np.ndarray:
  """Each age's band name from `parse_age_bands`; a negative age (not recorded) is 'unknown'."""
  ages = np.asarray(ages)
  out = np.full(ages.shape, UNKNOWN, dtype=object)
  for name, first, end in bands:
    out[(ages >= first) & (ages <= end)] = name
  return out.astype(str)


# The measures a subgroup is compared with the rest on: the AUC, and the sensitivity and
# specificity at the triage point (or at the one threshold given).
GAP_MEASURES = ("auc", "sensitivity", "specificity")
# The chance, over every comparison of one summary together, of naming a group where none
# differs (Holm's adjustment holds it whatever the comparisons' dependence).
FAMILY_ALPHA = 0.05
_NORMAL = statistics.NormalDist()


def _placements(pos, neg):
  """Per positive, the negatives below it; per negative, the positives above it (ties 0.5)."""
  neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
  below = np.searchsorted(neg_sorted, pos, side="left")
  wins = below + 0.5 * (np.searchsorted(neg_sorted, pos, side="right") - below)
  above = pos.size - np.searchsorted(pos_sorted, neg, side="right")
  losses = above + 0.5 * (pos.size - np.searchsorted(pos_sorted, neg, side="left") - above)
  return wins, losses


def _side(pos, neg, hit_pos, pass_neg):
  """One side's measures and their leave-one-out values, positives' then negatives'.

  Args:
    pos: the side's positives' scores.
    neg: its negatives' scores.
    hit_pos: per positive, whether it is called positive (at its threshold).
    pass_neg: per negative, whether it is called negative.

  Returns:
    {measure: (value, leave-one-out values over the positives, over the negatives)}.
  """
  n_pos, n_neg = pos.size, neg.size
  wins, losses = _placements(pos, neg)
  total = wins.sum()
  sens, spec = hit_pos.mean(), pass_neg.mean()
  return {
    "auc": (
      total / (n_pos * n_neg),
      (total - wins) / ((n_pos - 1) * n_neg),
      (total - losses) / (n_pos * (n_neg - 1)),
    ),
    "sensitivity": (sens, (hit_pos.sum() - hit_pos) / (n_pos - 1), np.full(n_neg, sens)),
    "specificity": (spec, np.full(n_pos, spec), (pass_neg.sum() - pass_neg) / (n_neg - 1)),
  }


def _acceleration(*jackknives):
  """BCa's acceleration from each stratum's leave-one-out values (strata resampled apart)."""
  terms = np.concatenate([(j.size - 1) * (j.mean() - j) / j.size for j in jackknives])
  spread = float(np.sum(terms**2))
  return float(np.sum(terms**3)) / (6.0 * spread**1.5) if spread > 0 else 0.0


def _bca(estimate, boot, accel, confidence):
  """The bias-corrected and accelerated (BCa) bootstrap interval of a statistic."""
  b = boot.size
  share = (np.sum(boot < estimate) + 0.5 * np.sum(boot == estimate)) / b
  z0 = _NORMAL.inv_cdf(min(max(share, 0.5 / b), 1.0 - 0.5 / b))

  def level(z):
    shifted = z0 + z
    return _NORMAL.cdf(z0 + shifted / (1.0 - accel * shifted)) if accel * shifted < 1 else 1.0

  edge = _NORMAL.inv_cdf((1.0 - confidence) / 2.0)
  low, high = np.quantile(boot, [level(edge), level(-edge)])
  return float(low), float(high)


def _permutation_gaps(y, s, called, g, n_permutations, rng):
  """Each measure's gap over random reassignments of the group within each class.

  Under 'within each class, the scores do not depend on the group', every
  reassignment that keeps the group's numbers of positives and negatives is as
  likely as the one observed, so the observed gap's rank among these is an
  exact-size test at any group size and any AUC or rate, near 1 included.
  """
  pos, neg = s[y], s[~y]
  # beats[i, j]: positive i against negative j, ties 0.5.
  beats = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
  n_gp, n_gn = int(g[y].sum()), int(g[~y].sum())
  n_rp, n_rn = pos.size - n_gp, neg.size - n_gn
  hit, passed = called[y].astype(float), (~called[~y]).astype(float)
  out = {m: [] for m in GAP_MEASURES}
  block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // max(pos.size, neg.size, 1))
  for start in range(0, n_permutations, block):
    size = min(block, n_permutations - start)
    in_pos = rng.permuted(np.tile(np.arange(pos.size) < n_gp, (size, 1)), axis=1).astype(float)
    in_neg = rng.permuted(np.tile(np.arange(neg.size) < n_gn, (size, 1)), axis=1).astype(float)
    group_wins = ((in_pos @ beats) * in_neg).sum(axis=1)
    rest_wins = (((1.0 - in_pos) @ beats) * (1.0 - in_neg)).sum(axis=1)
    out["auc"].append(group_wins / (n_gp * n_gn) - rest_wins / (n_rp * n_rn))
    group_hits = in_pos @ hit
    out["sensitivity"].append(group_hits / n_gp - (hit.sum() - group_hits) / n_rp)
    group_passed = in_neg @ passed
    out["specificity"].append(group_passed / n_gn - (passed.sum() - group_passed) / n_rn)
  return {m: np.concatenate(v) for m, v in out.items()}


def _two_sided_p(observed, null):
  """Twice the smaller tail of the null distribution at the observed gap, counted with it."""
  tolerance = 1e-12  # Equal gaps computed along different paths can differ in the last bit.
  below = np.sum(null <= observed + tolerance) + 1
  above = np.sum(null >= observed - tolerance) + 1
  return min(1.0, 2.0 * min(below, above) / (null.size + 1))


def gap_tests(
  labels, scores, called, in_group, *, n_resamples=2000, confidence=0.95, seed=0
) -> dict:
  """The group's gap to the rest in AUC, sensitivity and specificity: a CI and a test each.

  Gap = the group's figure minus the rest's. The interval: the group's and
  the rest's positives and negatives resampled apart (four strata),
  bias-corrected and accelerated (BCa). The p-value: a permutation test
  (`_permutation_gaps`), because any bootstrap interval of a gap between
  figures at or near 1 (a group with AUC 1.000 resamples to 1.000 every time)
  excludes zero far more often than its level says; the interval describes
  the gap's size, the p-value decides whether it is there.

  Args:
    labels: 0/1 labels.
    scores: the scores.
    called: per case, whether it is called abnormal at its threshold.
    in_group: per case, True for the group's cases.
    n_resamples: bootstrap resamples, and as many permutations.
    confidence: the intervals' coverage.
    seed: numpy's default_rng seed.

  Returns:
    {measure: {value, ci95: [low, high], p}} over GAP_MEASURES.
  """
  y, s = _check(labels, scores)
  called = np.asarray(called, bool)
  g = np.asarray(in_group, bool)
  strata = []  # (scores, called) of the group's positives, negatives, the rest's likewise.
  for side in (g, ~g):
    for cls in (y, ~y):
      strata.append((s[side & cls], called[side & cls]))
  (gp, gp_hit), (gn, gn_call), (rp, rp_hit), (rn, rn_call) = strata
  group, rest = _side(gp, gn, gp_hit, ~gn_call), _side(rp, rn, rp_hit, ~rn_call)
  rng = np.random.default_rng(seed)
  boots = {m: [] for m in GAP_MEASURES}
  block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // y.size)
  for start in range(0, n_resamples, block):
    size = min(block, n_resamples - start)
    sides = []
    for pos, neg, hit, call in ((gp, gn, gp_hit, gn_call), (rp, rn, rp_hit, rn_call)):
      pos_idx = rng.integers(0, pos.size, size=(size, pos.size))
      neg_idx = rng.integers(0, neg.size, size=(size, neg.size))
      sides.append(
        {
          "auc": _resample_aucs(pos, neg, pos_idx, neg_idx),
          "sensitivity": hit[pos_idx].mean(axis=1),
          "specificity": 1.0 - call[neg_idx].mean(axis=1),
        }
      )
    for m in GAP_MEASURES:
      boots[m].append(sides[0][m] - sides[1][m])
  null = _permutation_gaps(y, s, called, g, n_resamples, rng)
  out = {}
  for m in GAP_MEASURES:
    value_g, jack_gp, jack_gn = group[m]
    value_r, jack_rp, jack_rn = rest[m]
    gap = float(value_g - value_r)
    # Leaving out one of the rest's cases moves the gap opposite to the rest's figure.
    accel = _acceleration(jack_gp, jack_gn, -jack_rp, -jack_rn)
    low, high = _bca(gap, np.concatenate(boots[m]), accel, confidence)
    out[m] = {"value": gap, "ci95": [low, high], "p": _two_sided_p(gap, null[m])}
  return out


def holm(p_values) -> list[float]:
  """Holm's step-down adjusted p-values, in the order given (each at most 1)."""
  p = np.asarray(p_values, dtype=np.float64)
  order = np.argsort(p, kind="stable")
  scaled = p[order] * (p.size - np.arange(p.size))
  adjusted = np.empty_like(p)
  adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
  return adjusted.tolist()


def _enough(y) -> bool:
  """Whether cases with labels `y` hold MIN_PER_CLASS of each class."""
  return min(int(y.sum()), int(y.size - y.sum())) >= MIN_PER_CLASS


def subgroups(labels, scores, thresholds, groups, *, seed=0, n_resamples=2000) -> dict:
  """Each subgroup's figures at the validation split's thresholds, and its gaps to the rest.

  Per group: N and N abnormal; with MIN_PER_CLASS of each class, also its AUC
  with a stratified bootstrap CI, its operating points (the thresholds given,
  never chosen again on these cases), its ECE, and, when the rest of the
  split has enough of each class too, its gaps to the rest (`gap_tests`) in
  AUC and in sensitivity and specificity at the triage point. Every gap of
  every group is one family: a group "differs" (weaker, or stronger) when a
  gap's Holm-adjusted p is below FAMILY_ALPHA, so the chance of naming any
  group where none differs stays near FAMILY_ALPHA per summary, not per gap.
  Groups of the same cases are compared once: a group holding exactly the
  cases of an earlier one (such as sex and age both unknown) gets its figures
  and is marked `same_as` it (never named a second time), and the other side
  of a two-way split gets its twin's gaps with the sign turned.

  Args:
    labels: 0/1 labels of the evaluated split.
    scores: their scores.
    thresholds: {operating point: its threshold, or one per case (a pooled
      cross-validation's: each case's fold's)}, chosen on validation.
    groups: {attribute (such as 'sex'): a group name per case}; an attribute
      with fewer than two groups is left out (nothing to compare).
    seed: the bootstrap's seed.
    n_resamples: bootstrap resamples.

  Returns:
    {attribute: {group: figures}}, JSON-ready; a group with too few cases has
    only n, n_positive and too_few (True); a repeated one also has same_as
    ('attribute group').
  """
  y, s = _check(labels, scores)
  compare_at = TRIAGE if TRIAGE in thresholds else next(iter(thresholds), None)
  called = s >= np.broadcast_to(thresholds[compare_at], y.shape) if compare_at else np.zeros_like(y)
  out, seen, first, family, twins, repeats = {}, {}, {}, [], [], []
  for attribute, names in groups.items():
    for name, mask in _group_masks(names, y.size):
      yg, sg = y[mask], s[mask]
      entry = {"n": int(yg.size), "n_positive": int(yg.sum())}
      out.setdefault(attribute, {})[name] = entry
      if mask.tobytes() in seen:  # Its figures are its twin's, filled in below.
        repeats.append((entry, first[mask.tobytes()]))
        entry["same_as"] = seen[mask.tobytes()]
        continue
      seen[mask.tobytes()] = f"{attribute} {name}"
      first[mask.tobytes()] = entry
      if not _enough(yg):
        entry["too_few"] = True
        continue
      low, high = bootstrap_auc_ci(yg, sg, n_resamples=n_resamples, seed=seed)
      points = {}
      for point, threshold in thresholds.items():
        conf = confusion(yg, sg, np.broadcast_to(threshold, y.shape)[mask])
        points[point] = {**conf, **rates(conf)}
      entry.update(
        too_few=False,
        auc=roc_auc(yg, sg),
        auc_ci95=[low, high],
        operating_points=points,
        ece=calibration(yg, sg)["ece"],
        gaps=None,
        differs=None,
      )
      if not _enough(y[~mask]):
        continue
      twin = _twin(out[attribute], seen.get((~mask).tobytes()), attribute)
      if twin is not None:  # The other side of a two-way split: the same test, turned.
        tests = {m: _turned(t) for m, t in twin["gaps"]["tests"].items()}
        twins.append((tests, twin["gaps"]["tests"]))
      else:
        tests = gap_tests(y, s, called, mask, n_resamples=n_resamples, seed=seed)
        if not compare_at:
          tests = {"auc": tests["auc"]}
        family += tests.values()
      entry["gaps"] = {
        "n_rest": int((~mask).sum()),
        "n_rest_positive": int(y[~mask].sum()),
        "at": compare_at,
        "tests": tests,
      }
  for test, p in zip(family, holm([test["p"] for test in family]), strict=True):
    test["p_holm"] = p
  for tests, twin_tests in twins:
    for m, test in tests.items():
      test["p_holm"] = twin_tests[m]["p_holm"]
  for by_name in out.values():
    for entry in by_name.values():
      if entry.get("gaps"):
        _verdict(entry)
  for entry, original in repeats:
    entry.update({key: value for key, value in original.items() if key not in entry})
  return out


def _twin(by_name: dict, rest_name: str | None, attribute: str) -> dict | None:
  """The compared group of this attribute whose cases are exactly the rest's, if any."""
  if rest_name is None or not rest_name.startswith(f"{attribute} "):
    return None
  twin = by_name.get(rest_name[len(attribute) + 1 :])
  return twin if twin and twin.get("gaps") else None


def _turned(test: dict) -> dict:
  """A gap test seen from the other side: the value and interval negated, the p the same."""
  low, high = test["ci95"]
  return {"value": -test["value"], "ci95": [-high, -low], "p": test["p"]}


def _verdict(entry: dict) -> None:
  """Sets a compared group's `differs` and `differs_in` from its Holm-adjusted p-values."""
  tests = entry["gaps"]["tests"]
  found = [m for m, t in tests.items() if t["p_holm"] < FAMILY_ALPHA]
  weaker = [m for m in found if tests[m]["value"] < 0]
  entry["differs_in"] = weaker or found
  entry["differs"] = "weaker" if weaker else "stronger" if found else None


def any_compared(subgroup_figures: dict) -> bool:
  """Whether any group was compared with the rest of its split (has gaps)."""
  return any(
    entry.get("gaps") for by_name in subgroup_figures.values() for entry in by_name.values()
  )


def differing(subgroup_figures: dict) -> list[tuple[str, str, dict]]:
  """(attribute, group, figures) of each group that differs from the rest, weakest first."""
  found = [
    (attribute, name, entry)
    for attribute, by_name in subgroup_figures.items()
    for name, entry in by_name.items()
    if entry.get("differs") and "same_as" not in entry
  ]
  return sorted(found, key=lambda item: min(t["value"] for t in item[2]["gaps"]["tests"].values()))
