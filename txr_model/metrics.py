"""Clinical screening metrics: ROC AUC with bootstrap CI, operating points and rates.

Conventions: labels are 0/1 (1 = TB/abnormal = positive), scores are probabilities of the
positive class, and a case is predicted positive when score >= threshold. Pure numpy.
"""

import math

import numpy as np

# WHO target product profile for a TB triage test: minimum sensitivity and specificity.
WHO_TRIAGE = {"sensitivity": 0.90, "specificity": 0.70}

# The operating points' names (their keys in a summary's "operating_points"): Youden's J,
# and the WHO triage point, the highest specificity with sensitivity >= WHO_TRIAGE's.
YOUDEN = "youden"
TRIAGE = "triage"
OPERATING_POINTS = (YOUDEN, TRIAGE)

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
  val_labels, val_scores, test_labels, test_scores, *, seed=0, n_resamples=2000, groups=None
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

  Returns:
    A JSON-ready dict: auc, auc_ci95, n, n_positive, operating_points,
    calibration, validation_auc, and by_group when `groups` has two or more names.
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


def pooled_out_of_fold(fold_reports, labels, scores, *, seed=0, n_resamples=2000, groups=None):
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

  Returns:
    A JSON-ready dict: auc, auc_ci95, n, n_positive, operating_points
    (summed counts and their rates), calibration; by_group when `groups` has
    two or more names.
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
  return out
