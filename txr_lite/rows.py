"""Printing predictions row by row, as a table, CSV or JSON: shared by both predictors."""

import csv
import io
import json
import os
import sys

from txr_lite import files
from txr_lite import intake
from txr_lite import site_calibration

COLUMNS = ["file", "probability", "label", "out_of_distribution", "ood_score", "error"]
# --score=percent adds P(TB) x 100 as `score`: the 0-100 scale CAD tools report.
PERCENT_COLUMN = "score"
SCORES = ("probability", "percent")


class Printer:
  """Prints results as they come, as an aligned table, CSV or a JSON array."""

  def __init__(self, fmt: str, names: list[str], out=sys.stdout, score: str = "probability",
               summary: "Summary | None" = None):  # fmt: skip
    """Starts the output.

    Args:
      fmt: 'table', 'csv' or 'json'.
      names: every file that will be printed (sets the table's first column).
      out: where to print.
      score: 'percent' adds a `score` column, P(TB) x 100 (one of SCORES).
      summary: counts each printed result (the caller prints its lines at the end).
    """
    self.fmt, self.out, self.count = fmt, out, 0
    self.percent = score == "percent"
    self.columns = [*COLUMNS[:2], PERCENT_COLUMN, *COLUMNS[2:]] if self.percent else COLUMNS
    self.summary = summary or Summary()
    # Fixed up front, so rows can print before all are known.
    self.widths = {c: max(len(c), 8) for c in self.columns[:-1]}
    self.widths["file"] = max(len(files.display_name(f)) for f in ["file", *names])
    if fmt == "json":
      self._print("[", end="")
    elif fmt == "csv":
      self._print(",".join(self.columns))
    else:
      self._row({c: c for c in self.columns})

  def _print(self, text, end="\n"):
    print(text, end=end, file=self.out, flush=True)

  def _row(self, row):
    line = "  ".join(str(row[c]).ljust(self.widths[c]) for c in self.columns[:-1])
    self._print(f"{line}  {row['error']}".rstrip())

  def add(self, result: dict) -> None:
    """Prints one result.

    Args:
      result: {'file', 'probability', 'label', 'out_of_distribution',
        'ood_score'} or {'file', 'error'}.
    """
    self.count += 1
    self.summary.add(result)
    result = {**result, "file": files.display_name(result["file"])}
    if self.percent and "probability" in result:
      result[PERCENT_COLUMN] = round(100 * result["probability"], 1)
    if self.fmt == "json":
      self._print(("," if self.count > 1 else "") + "\n" + json.dumps(result), end="")
      return
    row = {c: result.get(c, "") for c in self.columns}
    for key in ("probability", "ood_score"):
      if isinstance(row[key], float):
        row[key] = f"{row[key]:.4f}"
    if self.fmt == "csv":
      buf = io.StringIO()
      csv.DictWriter(buf, self.columns, lineterminator="").writerow(row)
      self._print(buf.getvalue())
    else:
      self._row(row)

  def close(self) -> None:
    """Ends the output (the JSON array's bracket)."""
    if self.fmt == "json":
      self._print("\n]")


class Summary:
  """What a predictor saw, counted row by row, for its closing line on stderr.

  The share read abnormal is what WHO asks programmes to monitor after go-live.
  """

  def __init__(self):
    """Starts the counts at zero."""
    self.scored = self.abnormal = self.ood = 0
    self.refused: dict[str, int] = {}

  def add(self, result: dict) -> None:
    """Counts one printed result."""
    error = result.get("error")
    if error:
      reason = "unreadable or not a usable image"
      if error.startswith(intake.REFUSED):
        reason = error[len(intake.REFUSED) : error.index(")")]
      self.refused[reason] = self.refused.get(reason, 0) + 1
      return
    self.scored += 1
    self.abnormal += result.get("label") == "abnormal"
    self.ood += bool(result.get("out_of_distribution"))

  def lines(self, command: str, expected: list | None = None) -> list[str]:
    """The closing line (and, with a site profile's expected share, a warning if it drifts).

    Args:
      command: the predictor's name.
      expected: the profile's [share, low, high] read abnormal, or None.
    """
    total = self.scored + sum(self.refused.values())

    def pct(n, of):
      return f"{n} ({100 * n / of:.1f}%)" if of else str(n)

    refused = sum(self.refused.values())
    line = (
      f"{command}: {total} file(s): {self.scored} scored, {pct(self.abnormal, self.scored)} read"
      f" abnormal, {pct(self.ood, self.scored)} flagged out of distribution; refused"
      f" {pct(refused, total)}"
    )
    if refused:
      line += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.refused.items())) + ")"
    out = [line + "."]
    if expected is not None and self.scored:
      share, low, high = expected
      seen_low, seen_high = site_calibration.wilson(self.abnormal, self.scored)
      out.append(
        f"{command}: this site's profile expects {share:.1%} read abnormal (bounds {low:.1%}-"
        f"{high:.1%}); here {self.abnormal / self.scored:.1%} (95% CI {seen_low:.1%}-"
        f"{seen_high:.1%})."
      )
      if seen_high < low or seen_low > high:
        out.append(
          f"{command}: warning: the share read abnormal is outside what the site profile"
          " expects: the population or the equipment may have changed; calibrate again"
          " (txr-calibrate)."
        )
    return out


def run_rows(command: str, total: int, print_rows, closing=None) -> int:
  """Runs `print_rows` (it returns how many files failed); the predictors' exit code.

  Piped into `head`, stops quietly, as Unix tools do; a failed file is counted
  on stderr.

  Args:
    command: the command's name, for the summary line.
    total: how many rows there are.
    print_rows: prints the rows; returns how many failed.
    closing: returns the lines to print on stderr after the rows (the summary).

  Returns:
    1 if any file failed or the reader went away, else 0.
  """
  try:
    failed = print_rows()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit.
    return 1
  for line in closing() if closing else ():
    print(line, file=sys.stderr)
  if failed:
    print(f"{command}: {failed} of {total} file(s) failed.", file=sys.stderr)
  return 1 if failed else 0
