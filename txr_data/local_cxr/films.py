"""A site's films and what it knows of each, read from its manual dir in one of three layouts.

A screening programme's films are named by patient or study, not in the NLM
scheme, and their labels live where its staff keep them:

* `csv`: a `labels.csv` at the top of the manual dir, columns `file,label`
  and optionally `subject,sex,age,site,date,view`. `file` is the film's path
  under the manual dir (or its bare name, when no other film has it). The
  CSV is the only source of labels: a film whose folder or `_0`/`_1` suffix
  says otherwise is reported in the build log, and the CSV wins. A row whose
  file is not there is an error (the set would differ from the one the
  programme labelled); a film without a row is left out, with a warning that
  counts them.
* `folders`: class folders `normal/` and `abnormal/` (any case; also `tb/`)
  at any depth, as in `lungs/Normal/`.
* `suffix`: NLM-style names ending `_0` (normal) or `_1` (abnormal).

Films are PNG (any depth the NLM builders read), JPEG and DICOM (`.dcm`, or no
extension with the `DICM` preamble). A DICOM file's tags fill `subject`
(PatientID), `sex` (PatientSex), `age` (PatientAge), `view` (ViewPosition)
and `date` (StudyDate) where the CSV leaves them empty; a CSV value that a tag
contradicts is reported by file name, and the CSV's value kept.

Only file headers are read here (the DICOM tags, stopping before the pixels):
the pixels are converted in the build's workers.
"""

import dataclasses
import os
import re

from absl import logging
import tensorflow as tf

from txr_data import image_codec
from txr_data import nlm_tb
from txr_lite import files as files_lib
from txr_lite import intake
from txr_lite import site_labels

CSV_NAME = site_labels.CSV_NAME
LAYOUTS = ("csv", "folders", "suffix")
CSV_COLUMNS = site_labels.CSV_COLUMNS
FILM_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom"}
SEXES = {"f": "female", "female": "female", "m": "male", "male": "male"}
UNKNOWN_SEX = ("", "o", "u", "other", "unknown")
# DICOM ViewPosition's frontal and lateral terms; anything else is 'other'.
VIEWS = ("PA", "AP", "LL", "RL", "other", "unknown")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_SHOWN = 3  # Examples a warning names.


@dataclasses.dataclass(frozen=True)
class Film:
  """One film and what is known of it.

  Attributes:
    path: the file (local or gs://).
    name: its path under the manual dir, '/'-separated: the `image/filename`
      feature, unique within the set.
    kind: 'png', 'jpeg' or 'dicom'.
    label: 0 normal, 1 abnormal.
    subject: the patient; films of one patient share it (and so their split).
    sex: 'female', 'male' or 'unknown'.
    age: in whole years; -1 unknown.
    site: where it was taken ('' unknown).
    date: the study date, YYYY-MM-DD ('' unknown).
    view: one of VIEWS.
  """

  path: str
  name: str
  kind: str
  label: int
  subject: str
  sex: str = "unknown"
  age: int = -1
  site: str = ""
  date: str = ""
  view: str = "unknown"


def parse_sex(value: str, where: str) -> str:
  """'female', 'male' or 'unknown' from F/M/O or the words (any case)."""
  value = value.strip().lower()
  if value in UNKNOWN_SEX:
    return "unknown"
  if value not in SEXES:
    raise ValueError(f"{where}: sex {value!r}: write F, M, female, male, or leave it empty.")
  return SEXES[value]


def parse_age(value: str, where: str) -> int:
  """Whole years from '45', '045Y', '018M', '003W' or '400D' (DICOM's PatientAge); -1 if empty."""
  value = value.strip()
  if not value:
    return -1
  years = intake.age_years(value)
  if years is None:
    raise ValueError(
      f"{where}: age {value!r}: write whole years (45) or DICOM's form (045Y, 018M, 003W),"
      " or leave it empty."
    )
  return nlm_tb.age_or_unknown(years)


def parse_date(value: str, where: str) -> str:
  """YYYY-MM-DD from 'YYYY-MM-DD' or DICOM's 'YYYYMMDD'; '' if empty."""
  value = value.strip()
  if not value:
    return ""
  match = _DATE.match(value)
  if not match:
    raise ValueError(f"{where}: date {value!r}: write YYYY-MM-DD (or YYYYMMDD), or leave it empty.")
  return "-".join(match.groups())


def parse_view(value: str) -> str:
  """One of VIEWS from a ViewPosition-like value (any case); 'unknown' if empty."""
  value = value.strip().upper()
  if not value:
    return "unknown"
  return value if value in VIEWS else "other"


def kind_of(path: str) -> str | None:
  """'png', 'jpeg' or 'dicom' by extension (or the DICM preamble when there is none); else None."""
  name = os.path.basename(path)
  extension = os.path.splitext(name)[1].lower()
  if extension:
    return FILM_EXTENSIONS.get(extension)
  with tf.io.gfile.GFile(path, "rb") as f:
    return "dicom" if files_lib.is_dicom(path, f.read(132)) else None


def _subject_from_name(name: str) -> str:
  """A film's subject when nothing names its patient.

  An NLM-style name keeps the patient in its stem (`SITE_0001_1.png`: patient
  `SITE_0001`, wherever the file is), so a patient filed under both labels is
  caught, as the NLM builders catch it; any other film is its own patient
  (its path without the extension).
  """
  match = site_labels.suffix_match(name)
  return match[1] if match else os.path.splitext(name)[0]


def find_files(root: str) -> tuple[dict[str, tuple[str, str]], int]:
  """The films under `root`: ({name under root: (path, kind)}, files that are not films)."""
  films, others = {}, 0
  root = root.rstrip("/")
  for folder, files in nlm_tb.walk(root, prefix=""):
    for file_name in files:
      path = os.path.join(folder, file_name)
      name = (
        os.path.relpath(path, root).replace(os.sep, "/")
        if "://" not in root
        else (path[len(root) + 1 :])
      )
      if name == CSV_NAME:
        continue
      kind = kind_of(path)
      if kind is None:
        others += 1
      else:
        films[name] = (path, kind)
  return films, others


def read_csv(path: str) -> list[dict[str, str]]:
  """The rows of a labels.csv (local or gs://); see `site_labels.read_rows`."""
  with tf.io.gfile.GFile(path, "rb") as f:
    rows = site_labels.read_rows(f.read().decode("utf-8-sig"), path)
  unknown = sorted({c for row in rows[:1] for c in row} - {*CSV_COLUMNS, "_row"})
  if unknown:
    logging.warning("%s: ignoring column(s) %s (txr reads %s).", path, unknown, CSV_COLUMNS)
  return rows


def dicom_tags(path: str) -> dict[str, str]:
  """{csv column: value} from a DICOM file's header (PatientID, PatientSex, ...), pixels unread.

  Raises:
    ValueError: naming the file, when pydicom is missing or the file is not DICOM.
  """
  try:
    import pydicom
  except ImportError:
    from txr_lite import dicom

    raise ValueError(f"{path}: {dicom.INSTALL}") from None
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      ds = pydicom.dcmread(f, stop_before_pixels=True)
  except Exception as e:  # pydicom raises many types for a bad file.
    raise ValueError(
      f"{path}: not a readable DICOM file ({e}); re-export it or remove it."
    ) from None
  tags = {"subject": "PatientID", "sex": "PatientSex", "age": "PatientAge", "view": "ViewPosition",
          "date": "StudyDate"}  # fmt: skip
  return {column: str(ds.get(keyword, "") or "").strip() for column, keyword in tags.items()}


def _parsed(values: dict[str, str], where: str) -> dict:
  """The optional columns' values parsed (empty ones left out)."""
  parsers = {"sex": parse_sex, "age": parse_age, "date": parse_date,
             "view": lambda v, _: parse_view(v), "subject": lambda v, _: v.strip(),
             "site": lambda v, _: v.strip()}  # fmt: skip
  return {c: parsers[c](v, where) for c, v in values.items() if c in parsers and v.strip()}


def _warn(what: str, examples: list[str]) -> None:
  if examples:
    logging.warning("%d %s, e.g. %s.", len(examples), what, "; ".join(examples[:_SHOWN]))


def find(root: str) -> tuple[str, list[Film]]:
  """The layout of `root` and its films, checked as the NLM builders check theirs.

  Args:
    root: the manual dir (local or gs://).

  Returns:
    (the layout, one of LAYOUTS; the films, sorted by name).

  Raises:
    ValueError or FileNotFoundError: naming the file and the fix, for a film
      without a label, a label that is neither, a CSV row without its film,
      a film listed twice, or one patient under both labels.
  """
  files, others = find_files(root)
  if not files:
    raise FileNotFoundError(f"No films (.png, .jpg, .jpeg, .dcm) under the manual dir {root}.")
  csv_path = os.path.join(root, CSV_NAME)
  if tf.io.gfile.exists(csv_path):
    layout, known = "csv", _from_csv(csv_path, files)
  else:
    by_folder = {name: site_labels.label_from_folders(name) for name in files}
    layout = "folders" if any(v is not None for v in by_folder.values()) else "suffix"
    known = {}
    for name in sorted(files):
      label = by_folder[name] if layout == "folders" else site_labels.label_from_suffix(name)
      if label is None:
        raise ValueError(
          f"{files[name][0]}: no label: put it under a normal/ or abnormal/ folder"
          if layout == "folders"
          else f"{files[name][0]}: expected a name ending _0 (normal) or _1 (abnormal), or a"
          f" {CSV_NAME} or class folders beside it; rename it, or add it to a {CSV_NAME}."
        )
      suffix = site_labels.label_from_suffix(name)
      if suffix is not None and suffix != label:
        raise ValueError(
          f"{files[name][0]}: filed under {nlm_tb.LABELS[label]} but its name ends"
          f" _{suffix} ({nlm_tb.LABELS[suffix]}); move or rename it."
        )
      known[name] = {"label": label}
  films = [_film(name, *files[name], known[name]) for name in sorted(known)]
  _check_subjects(films)
  logging.info(
    "local_cxr: layout %s under %s: %d films (%s), %d abnormal; %d other files skipped.",
    layout, root, len(films),
    ", ".join(f"{sum(f.kind == k for f in films)} {k}" for k in ("png", "jpeg", "dicom")),
    sum(f.label for f in films), others,
  )  # fmt: skip
  return layout, films


def _from_csv(csv_path: str, files: dict[str, tuple[str, str]]) -> dict[str, dict]:
  """{film name: its row's values (label parsed)} for the films a labels.csv lists."""
  rows = read_csv(csv_path)
  by_base = {}
  for name in files:
    by_base.setdefault(os.path.basename(name), []).append(name)
  known, absent, disagree = {}, [], []
  for row in rows:
    where = f"{csv_path} row {row['_row']} ({row['file']})"
    name = row["file"].replace("\\", "/").lstrip("./")
    if name not in files and len(by_base.get(name, [])) == 1:
      name = by_base[name][0]
    if name not in files:
      absent.append(row["file"])
      continue
    if name in known:
      raise ValueError(f"{where}: {name} is listed twice; keep one row per film.")
    label = site_labels.parse_label(row["label"], where)
    other = site_labels.label_from_folders(name)
    other = site_labels.label_from_suffix(name) if other is None else other
    if other is not None and other != label:
      disagree.append(f"{name}: {nlm_tb.LABELS[label]} in the CSV, {nlm_tb.LABELS[other]} by name")
    known[name] = {**_parsed(row, where), "label": label}
  if absent:
    raise ValueError(
      f"{csv_path}: {len(absent)} row(s) name a film that is not under the manual dir, e.g."
      f" {', '.join(absent[:_SHOWN])}; copy the films in or delete their rows."
    )
  _warn(f"films have a label in {CSV_NAME} that their folder or name contradicts (the CSV's"
        " is used)", disagree)  # fmt: skip
  _warn(f"films under the manual dir are not in {CSV_NAME} and are left out",
        sorted(set(files) - set(known)))  # fmt: skip
  return known


def _film(name: str, path: str, kind: str, known: dict) -> Film:
  """The Film of one file: the CSV's values, then its DICOM tags, then defaults."""
  values = dict(known)
  if kind == "dicom":
    tags = _parsed(dicom_tags(path), path)
    conflicts = [f"{c} {values[c]!r} in the CSV, {tags[c]!r} in the DICOM header"
                 for c in tags if c in values and values[c] != tags[c]]  # fmt: skip
    _warn(f"value(s) of {name} disagree (the CSV's is used)", conflicts)
    values = {**tags, **values}
  values.setdefault("subject", _subject_from_name(name))
  return Film(path=path, name=name, kind=kind, **values)


def _check_subjects(films: list[Film]) -> None:
  """Refuses a patient filed under both labels, as the NLM builders do."""
  first = {}
  for film in films:
    other = first.setdefault(film.subject, film)
    if other.label != film.label:
      raise ValueError(
        f"{film.path}: the same patient ({film.subject}) is also filed as {other.path} with"
        " the other label; keep the file with the right label."
      )


def example(film: Film, max_side: int | None) -> tuple[str, dict]:
  """(key, example) of one film: its pixels converted as the NLM builders store theirs.

  A function of an importable module (not of the builder's, which `tfds build`
  loads from its folder), so Beam can send it to other processes or machines.
  """
  with tf.io.gfile.GFile(film.path, "rb") as f:
    data = f.read()
  return film.name, {
    "image": image_codec.normalise(data, film.path, film.kind, max_side),
    "image/filename": film.name,
    "label": film.label,
    "patient_id": -1,  # The NLM archives' number; a site's subject is `subject`.
    "subject": film.subject,
    "sex": film.sex,
    "age": film.age,
    "finding": "",
    "fold": nlm_tb.fold_of(film.subject),
    "site": film.site,
    "view": film.view,
    "date": film.date,
  }
