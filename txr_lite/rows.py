"""Printing predictions row by row, as a table, CSV or JSON: shared by both predictors."""

import csv
import io
import json
import os
import sys

from txr_lite import files

COLUMNS = ["file", "probability", "label", "out_of_distribution", "ood_score", "error"]


class Printer:
  """Prints results as they come, as an aligned table, CSV or a JSON array."""

  def __init__(self, fmt: str, names: list[str], out=sys.stdout):
    """Starts the output.

    Args:
      fmt: 'table', 'csv' or 'json'.
      names: every file that will be printed (sets the table's first column).
      out: where to print.
    """
    self.fmt, self.out, self.count = fmt, out, 0
    # Fixed up front, so rows can print before all are known.
    self.widths = {c: max(len(c), 8) for c in COLUMNS[:-1]}
    self.widths["file"] = max(len(files.display_name(f)) for f in ["file", *names])
    if fmt == "json":
      self._print("[", end="")
    elif fmt == "csv":
      self._print(",".join(COLUMNS))
    else:
      self._row({c: c for c in COLUMNS})

  def _print(self, text, end="\n"):
    print(text, end=end, file=self.out, flush=True)

  def _row(self, row):
    line = "  ".join(str(row[c]).ljust(self.widths[c]) for c in COLUMNS[:-1])
    self._print(f"{line}  {row['error']}".rstrip())

  def add(self, result: dict) -> None:
    """Prints one result.

    Args:
      result: {'file', 'probability', 'label', 'out_of_distribution',
        'ood_score'} or {'file', 'error'}.
    """
    self.count += 1
    result = {**result, "file": files.display_name(result["file"])}
    if self.fmt == "json":
      self._print(("," if self.count > 1 else "") + "\n" + json.dumps(result), end="")
      return
    row = {c: result.get(c, "") for c in COLUMNS}
    for key in ("probability", "ood_score"):
      if isinstance(row[key], float):
        row[key] = f"{row[key]:.4f}"
    if self.fmt == "csv":
      buf = io.StringIO()
      csv.DictWriter(buf, COLUMNS, lineterminator="").writerow(row)
      self._print(buf.getvalue())
    else:
      self._row(row)

  def close(self) -> None:
    """Ends the output (the JSON array's bracket)."""
    if self.fmt == "json":
      self._print("\n]")


def run_rows(command: str, total: int, print_rows) -> int:
  """Runs `print_rows` (it returns how many files failed); the predictors' exit code.

  Piped into `head`, stops quietly, as Unix tools do; a failed file is counted
  on stderr.

  Args:
    command: the command's name, for the summary line.
    total: how many rows there are.
    print_rows: prints the rows; returns how many failed.

  Returns:
    1 if any file failed or the reader went away, else 0.
  """
  try:
    failed = print_rows()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit.
    return 1
  if failed:
    print(f"{command}: {failed} of {total} file(s) failed.", file=sys.stderr)
  return 1 if failed else 0
