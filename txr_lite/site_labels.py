"""How a site labels its films: a labels.csv's words, class folders, `_0`/`_1` names.

The one source of these rules for the local_cxr builder (txr_data/local_cxr)
and txr-calibrate, which reads the reference labels of a site's scored films
the way the builder reads them. Standard library only.
"""

import csv
import io
import os
import re

CSV_NAME = "labels.csv"
CSV_COLUMNS = ("file", "label", "subject", "sex", "age", "site", "date", "view")
LABELS = ("normal", "abnormal")
LABEL_WORDS = {"0": 0, "normal": 0, "1": 1, "abnormal": 1, "tb": 1}
CLASS_FOLDERS = {"normal": 0, "abnormal": 1, "tb": 1}
_SUFFIX = re.compile(r"^(.+)_([01])$")


def parse_label(value: str, where: str) -> int:
  """0 or 1 from '0', '1', 'normal', 'abnormal' or 'tb' (any case); ValueError naming `where`."""
  label = LABEL_WORDS.get(value.strip().lower())
  if label is None:
    raise ValueError(
      f"{where}: label {value!r} is neither normal nor abnormal; write 0, 1, normal, abnormal"
      " or tb."
    )
  return label


def label_from_folders(name: str) -> int | None:
  """The label a class folder in `name`'s path gives (`lungs/Normal/x.png` -> 0), or None.

  Raises:
    ValueError: when two class folders on the path disagree.
  """
  parts = name.replace("\\", "/").split("/")[:-1]
  labels = {CLASS_FOLDERS[p.lower()] for p in parts if p.lower() in CLASS_FOLDERS}
  if len(labels) > 1:
    raise ValueError(f"{name}: it is under both a normal and an abnormal folder; move it.")
  return labels.pop() if labels else None


def suffix_match(name: str):
  """The match of an NLM-style stem (`SITE_0001_1`: groups patient, label), or None."""
  return _SUFFIX.match(os.path.splitext(os.path.basename(name))[0])


def label_from_suffix(name: str) -> int | None:
  """The label of an NLM-style name (`..._0.png` normal, `..._1.png` abnormal), or None."""
  match = suffix_match(name)
  return int(match[2]) if match else None


def read_rows(text: str, path: str) -> list[dict[str, str]]:
  """The rows of a labels.csv's text, columns lower-cased, each with its row number under '_row'.

  Args:
    text: the file's text (a byte-order mark allowed).
    path: the file, for the errors.

  Raises:
    ValueError: naming the file, without `file` and `label` columns, for a row
      without a file name, or for a file listed twice.
  """
  reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
  columns = [(c or "").strip().lower() for c in reader.fieldnames or []]
  missing = [c for c in ("file", "label") if c not in columns]
  if missing:
    raise ValueError(
      f"{path}: no {' or '.join(missing)} column; the first line must name the columns,"
      f" at least file,label (optional: {','.join(CSV_COLUMNS[2:])})."
    )
  rows, seen = [], {}
  for number, raw in enumerate(reader, start=2):
    row = {c: (v or "").strip() for c, v in zip(columns, raw.values(), strict=False)}
    row["_row"] = str(number)
    if not row["file"]:
      raise ValueError(f"{path} row {number}: no file name; fill it in or delete the row.")
    if row["file"] in seen:
      raise ValueError(
        f"{path} row {number}: {row['file']} is listed twice (also row {seen[row['file']]});"
        " keep one row per film."
      )
    seen[row["file"]] = number
    rows.append(row)
  return rows
