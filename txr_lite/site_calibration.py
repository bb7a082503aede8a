"""A threshold chosen on a site's own films: the table of every threshold, the rules, the CIs.

WHO's guidance on computer-aided detection for TB asks each programme to
choose the score threshold on its own films with a reference result, looking
at sensitivity, specificity and, at the local prevalence, how many people each
threshold sends for a confirmatory test and how many cases it misses. This is
that arithmetic, in plain Python (txr-calibrate runs where TensorFlow is not).
Every figure is computed on the films given, nothing else.
"""

import dataclasses
import math

Z95 = 1.959963984540054  # The standard normal's 97.5th percentile.
TRIAGE_SENSITIVITY = 0.90  # WHO's target product profile for a triage test.
PER = 1000  # People screened, for the table's counts.


def wilson(k: int, n: int) -> tuple[float, float]:
  """The 95% Wilson score interval of a proportion k/n; (0, 1) when n is 0."""
  if n == 0:
    return 0.0, 1.0
  p = k / n
  centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
  half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
  # At 0 and n the bound is exactly 0 or 1 (the formula leaves a rounding error).
  return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


@dataclasses.dataclass(frozen=True)
class Row:
  """One threshold: a film is read abnormal when its score is at or above it."""

  threshold: float
  tp: int
  fn: int
  tn: int
  fp: int
  prevalence: float

  @property
  def sensitivity(self) -> float:
    """TP / (TP + FN)."""
    return self.tp / (self.tp + self.fn)

  @property
  def specificity(self) -> float:
    """TN / (TN + FP)."""
    return self.tn / (self.tn + self.fp)

  @property
  def sensitivity_ci(self) -> tuple[float, float]:
    """Its 95% Wilson interval."""
    return wilson(self.tp, self.tp + self.fn)

  @property
  def specificity_ci(self) -> tuple[float, float]:
    """Its 95% Wilson interval."""
    return wilson(self.tn, self.tn + self.fp)

  @property
  def referral_rate(self) -> float:
    """The share of people screened read abnormal (sent for a confirmatory test)."""
    p = self.prevalence
    return p * self.sensitivity + (1 - p) * (1 - self.specificity)

  @property
  def referral_rate_ci(self) -> tuple[float, float]:
    """Bounds of the referral rate from the sensitivity's and specificity's 95% CIs.

    Each bound takes both intervals' ends that push it furthest, so it covers
    at least as often as the two intervals together (a conservative interval).
    """
    p, (s_low, s_high), (c_low, c_high) = (self.prevalence, self.sensitivity_ci,
                                           self.specificity_ci)  # fmt: skip
    return p * s_low + (1 - p) * (1 - c_high), p * s_high + (1 - p) * (1 - c_low)

  def per_thousand(self) -> dict:
    """Per 1,000 screened at the prevalence: referred, found, missed; PPV, NPV, tests per case."""
    p, sens, spec = self.prevalence, self.sensitivity, self.specificity
    referred, found = PER * self.referral_rate, PER * p * sens
    negative = PER - referred
    return {
      "referred": referred,
      "found": found,
      "missed": PER * p * (1 - sens),
      "ppv": found / referred if referred else float("nan"),
      "npv": PER * (1 - p) * spec / negative if negative else float("nan"),
      "tests_per_case_found": referred / found if found else float("inf"),
    }

  def as_dict(self) -> dict:
    """The table's CSV columns."""
    (s_low, s_high), (c_low, c_high) = self.sensitivity_ci, self.specificity_ci
    return {
      "threshold": self.threshold, "tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp,
      "sensitivity": self.sensitivity, "sensitivity_low": s_low, "sensitivity_high": s_high,
      "specificity": self.specificity, "specificity_low": c_low, "specificity_high": c_high,
      **{f"{k}_per_{PER}" if k in ("referred", "found", "missed") else k: v
         for k, v in self.per_thousand().items()},
    }  # fmt: skip


COLUMNS = list(Row(0.5, 1, 0, 1, 0, 0.1).as_dict())


def table(scores: list[float], labels: list[int], prevalence: float) -> list[Row]:
  """One row per distinct score, highest threshold first.

  Args:
    scores: each film's P(TB).
    labels: each film's reference label (1 abnormal).
    prevalence: the share of people screened who have TB (0-1).

  Raises:
    ValueError: without films of both labels, or a prevalence outside (0, 1).
  """
  if not 0 < prevalence < 1:
    raise ValueError(f"--prevalence={prevalence}: give the share with TB, between 0 and 1.")
  positives = sum(labels)
  negatives = len(labels) - positives
  if not positives or not negatives:
    raise ValueError(
      f"{positives} abnormal and {negatives} normal films: a threshold needs films of both."
    )
  order = sorted(zip(scores, labels, strict=True), key=lambda x: -x[0])
  rows, tp, fp = [], 0, 0
  for i, (score, label) in enumerate(order):
    tp, fp = tp + label, fp + (1 - label)
    if i + 1 < len(order) and order[i + 1][0] == score:
      continue  # Films with the same score are read alike.
    rows.append(Row(score, tp, positives - tp, negatives - fp, fp, prevalence))
  return rows


@dataclasses.dataclass(frozen=True)
class Rule:
  """How the operating point is chosen.

  Attributes:
    target_sensitivity: the highest specificity with sensitivity at least this.
    max_referral_rate: or the highest sensitivity referring at most this share.
  """

  target_sensitivity: float | None = TRIAGE_SENSITIVITY
  max_referral_rate: float | None = None

  def text(self) -> str:
    """The rule in words, as the profile and card state it."""
    if self.max_referral_rate is not None:
      return (
        f"the highest sensitivity sending at most {self.max_referral_rate:.1%} of people"
        " screened for a confirmatory test"
      )
    name = "WHO's triage target: " if self.target_sensitivity == TRIAGE_SENSITIVITY else ""
    return f"{name}the highest specificity with sensitivity at least {self.target_sensitivity:.2f}"

  def choose(self, rows: list[Row]) -> Row:
    """The row the rule picks.

    Raises:
      ValueError: when no threshold meets it.
    """
    if self.max_referral_rate is not None:
      meets = [r for r in rows if r.referral_rate <= self.max_referral_rate]
      key = lambda r: (r.sensitivity, r.specificity)  # noqa: E731
    else:
      meets = [r for r in rows if r.sensitivity >= self.target_sensitivity]
      key = lambda r: (r.specificity, r.sensitivity)  # noqa: E731
    if not meets:
      raise ValueError(f"no threshold meets the rule ({self.text()}) on these films.")
    return max(meets, key=key)

  def warning(self, row: Row) -> str | None:
    """Words for a chosen point whose CI cannot show the target is met; None if it can."""
    n = row.tp + row.fn
    low, high = row.sensitivity_ci
    if self.max_referral_rate is None and low < self.target_sensitivity:
      return (
        f"with {n} abnormal films, the sensitivity at this threshold is {row.sensitivity:.3f}"
        f" (95% CI {low:.3f}-{high:.3f}): too few films to show that it reaches"
        f" {self.target_sensitivity:.2f}. Label more abnormal films before relying on it."
      )
    r_low, r_high = row.referral_rate_ci
    if self.max_referral_rate is not None and r_high > self.max_referral_rate:
      return (
        f"the referral rate at this threshold is {row.referral_rate:.3f} (95% bounds"
        f" {r_low:.3f}-{r_high:.3f}): with {row.tp + row.fn + row.tn + row.fp} films, too few"
        f" to show that it stays at or under {self.max_referral_rate:.3f}."
      )
    return None
