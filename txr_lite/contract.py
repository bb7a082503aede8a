"""The contract between txr's exporters and its predictors, written once.

Two exporters (`txr_model/export.py`, the SavedModel; `txr_model/litert.py`,
the `.tflite` variants) write a model's metadata and two predictors
(`txr-predict`, `txr-predict-lite`) read it. This module owns everything they
must agree on: the export folder's file names, the metadata (`Metadata`, with
a format version), the labels, the label rule and the out-of-distribution
rule. Adding a field a predictor needs is a change here and in the code that
uses it. No TensorFlow: the lite predictor imports it.
"""

import dataclasses
import hashlib
import json
import math
import os

# The metadata's layout and the rules its numbers mean; a predictor refuses another. 4:
# polarity is the middle strip minus the brighter lung strip (format 3's SavedModels
# compute the mean of both in their graph, and would disagree with the lite path).
FORMAT = 4
LABELS = ("normal", "abnormal")  # Index = the label rule's outcome.
# The operating points a label's threshold can come from (chosen on validation): Youden's J,
# and the WHO triage point (the highest specificity with sensitivity at least 0.90).
YOUDEN = "youden"
TRIAGE = "triage"
OPERATING_POINTS = (YOUDEN, TRIAGE)
SAVED_MODEL = "saved_model"  # The `variant` of the SavedModel's metadata.
VARIANTS = ("float32", "float16", "int8")  # The LiteRT variants.

SAVED_MODEL_METADATA = "assets.extra/txr.json"  # Inside export/; TF Serving ignores assets.extra.
OOD_SCORE_LIMIT = 1.0  # An OOD score (distance over the detector's threshold) above it is flagged.


@dataclasses.dataclass(frozen=True)
class LiteFiles:
  """The three files of one LiteRT variant, side by side in export/."""

  tflite: str  # model_<variant>.tflite: uint8 gray images -> P(TB), pooled features
  metadata: str  # model_<variant>.json: its `Metadata`
  ood: str  # model_<variant>.ood.npz: the OOD detector fitted on this variant's own features


def lite_files(export_dir: str, variant: str) -> LiteFiles:
  """The files of `variant` in an export folder."""
  return files_of(os.path.join(export_dir, f"model_{variant}.tflite"))


def files_of(tflite_path: str) -> LiteFiles:
  """The files of the variant whose network is `tflite_path`."""
  stem = tflite_path[: -len(".tflite")] if tflite_path.endswith(".tflite") else tflite_path
  return LiteFiles(tflite_path, f"{stem}.json", f"{stem}.ood.npz")


def digest(data: bytes) -> str:
  """The SHA-256 that binds a variant's metadata to its network and detector files."""
  return hashlib.sha256(data).hexdigest()


def _plain(value):
  """A numpy value (in a run's facts) as JSON's own."""
  if hasattr(value, "tolist"):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serializable")


class MetadataError(ValueError):
  """Metadata a predictor cannot use; the message names the file and what to do."""


def _fields_of(cls, raw: dict, source: str, again: str, spelt_out=()) -> dict:
  """`raw`'s values of the dataclass `cls`'s fields; MetadataError naming any missing or unknown.

  Args:
    cls: Metadata or SiteProfile.
    raw: the file's JSON object.
    source: the file, for the error.
    again: what to do, for the error.
    spelt_out: keys the file may also hold for people (not fields).
  """
  names = {f.name for f in dataclasses.fields(cls)}
  required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
  missing = sorted(required - raw.keys())
  unknown = sorted(raw.keys() - names - set(spelt_out))
  if missing or unknown:
    what = "; ".join(
      text
      for text in (
        missing and f"missing {', '.join(missing)}",
        unknown and f"unknown {', '.join(unknown)}",
      )
      if text
    )
    raise MetadataError(f"{source}: {what}; {again}.")
  return {k: v for k, v in raw.items() if k in names}


@dataclasses.dataclass(frozen=True)
class Metadata:
  """What a predictor needs to read a model's outputs, as both exporters write it.

  Attributes:
    variant: SAVED_MODEL, or one of VARIANTS.
    image_size: the network's input side, in pixels.
    max_side: the training images' stored longest side (inputs are shrunk to
      it first, as the builder shrank them); None where the source pixels were kept.
    operating_point: which of `thresholds` labels a film.
    thresholds: {operating point: P(TB) at or above which a film is
      abnormal}, chosen on the validation split with this model's own scores.
    ood_threshold: the detector's distance threshold (OOD score = distance / it).
    max_colourfulness: a film more colourful than this is flagged.
    aspect_range: (lowest, highest) width / height not flagged.
    min_polarity: a film whose polarity (image_rules.polarity_strips: middle minus
      the brighter lung, in grey levels) is lower is flagged: a negative, or a ramp.
    min_smoothness: a film whose neighbouring pixels correlate less
      (image_rules.smoothness_span) is flagged: noise, not a film.
    thresholds_from: where the thresholds were chosen: dataset, split, n, auc.
    run: facts about the training run (for people; no predictor reads them).
    calibration: the int8 variant's calibration images (split, n); else None.
    files: {"tflite", "ood"}: the SHA-256 of a LiteRT variant's other two
      files, so a .json never runs with another export's network or
      detector; None for the SavedModel (one folder, written as a whole).
    format: FORMAT.
  """

  variant: str
  image_size: int
  max_side: int | None
  operating_point: str
  thresholds: dict
  ood_threshold: float
  max_colourfulness: float
  aspect_range: tuple
  min_polarity: float
  min_smoothness: float
  thresholds_from: dict | None = None
  run: dict = dataclasses.field(default_factory=dict)
  calibration: dict | None = None
  files: dict | None = None
  format: int = FORMAT

  @property
  def threshold(self) -> float:
    """The operating point's threshold: the one that labels films."""
    return self.thresholds[self.operating_point]

  def label(self, probability):
    """The label rule: 1 (abnormal) where P(TB) >= the threshold; numpy, TF or a float."""
    return probability >= self.threshold

  def out_of_distribution(self, score, colourfulness, aspect, polarity, smoothness):
    """The OOD rule: feature distance, colour, shape, polarity or noise unlike training's."""
    low, high = self.aspect_range
    return (
      (score > OOD_SCORE_LIMIT)
      | (colourfulness > self.max_colourfulness)
      | (aspect < low)
      | (aspect > high)
      | (polarity < self.min_polarity)
      | (smoothness < self.min_smoothness)
    )

  def rule_text(self) -> str:
    """The predictors' closing line: how the label column was decided."""
    model = "" if self.variant == SAVED_MODEL else f"{self.variant} model's "
    return (
      f"label: abnormal when probability >= {self.threshold:.4f} (the {model}"
      f"{self.operating_point} operating point, chosen on validation)"
    )

  def to_json(self) -> str:
    """The metadata file's text (with `threshold` and `labels` spelt out for people and clients)."""
    fields = dataclasses.asdict(self)
    fields["aspect_range"] = list(self.aspect_range)
    return json.dumps(
      {**fields, "threshold": self.threshold, "labels": list(LABELS)}, indent=2, default=_plain
    )

  @classmethod
  def from_json(cls, text: str, source: str) -> "Metadata":
    """Reads and checks a metadata file's text.

    Args:
      text: the file's contents.
      source: its path, for the error messages.

    Raises:
      MetadataError: one line naming `source`, what is wrong and what to do.
    """
    again = "export again with this txr (txr-train, or txr-export-lite for .tflite files)"
    try:
      raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise MetadataError(f"{source}: not JSON ({e}); the file is damaged: {again}.") from None
    if not isinstance(raw, dict):
      raise MetadataError(f"{source}: not a txr model's metadata; {again}.")
    version = raw.get("format")
    if not isinstance(version, int) or version < FORMAT:
      raise MetadataError(
        f"{source}: metadata format {version!r}, written by an older txr; {again}."
      )
    if version > FORMAT:
      raise MetadataError(
        f"{source}: metadata format {version}, written by a newer txr than this one (it reads"
        f" format {FORMAT}): upgrade txr."
      )
    fields = _fields_of(cls, raw, source, again, spelt_out=("threshold", "labels"))
    meta = cls(**fields)
    problem = meta._problem(raw)
    if problem:
      raise MetadataError(f"{source}: {problem}; {again}.")
    return dataclasses.replace(meta, aspect_range=tuple(meta.aspect_range))

  def _problem(self, raw: dict) -> str | None:
    """What is wrong with the values, or None."""

    def number(value, low=-math.inf, high=math.inf) -> bool:
      return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
      )

    def size(value) -> bool:
      return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if self.variant not in (SAVED_MODEL, *VARIANTS):
      return f"variant {self.variant!r} is none of {', '.join((SAVED_MODEL, *VARIANTS))}"
    if not size(self.image_size):
      return f"image_size {self.image_size!r} is not a positive whole number"
    if self.max_side is not None and not size(self.max_side):
      return f"max_side {self.max_side!r} is neither null nor a positive whole number"
    if self.operating_point not in OPERATING_POINTS:
      return f"operating_point {self.operating_point!r} is none of {', '.join(OPERATING_POINTS)}"
    if not isinstance(self.thresholds, dict) or self.operating_point not in self.thresholds:
      return f"thresholds has no {self.operating_point} threshold"
    for point, value in self.thresholds.items():
      if not number(value, 0.0, 1.0):
        return f"the {point} threshold {value!r} is not a probability (a number from 0 to 1)"
    if "threshold" in raw and raw["threshold"] != self.threshold:
      return (
        f"threshold {raw['threshold']!r} is not the {self.operating_point} threshold"
        f" {self.threshold!r}"
      )
    if raw.get("labels", list(LABELS)) != list(LABELS):
      return f"labels {raw['labels']!r}, expected {list(LABELS)}"
    if not number(self.ood_threshold) or self.ood_threshold <= 0:
      return f"ood_threshold {self.ood_threshold!r} is not a positive number"
    if not number(self.max_colourfulness, 0.0):
      return f"max_colourfulness {self.max_colourfulness!r} is not a number of at least 0"
    if not number(self.min_polarity, -255.0, 255.0):
      return f"min_polarity {self.min_polarity!r} is not a number from -255 to 255"
    if not number(self.min_smoothness, -1.0, 1.0):
      return f"min_smoothness {self.min_smoothness!r} is not a number from -1 to 1"
    aspect = self.aspect_range
    if (
      not isinstance(aspect, (list, tuple))
      or len(aspect) != 2
      or not all(number(v) for v in aspect)
      or not 0 < aspect[0] < aspect[1]
    ):
      return f"aspect_range {aspect!r} is not [low, high] with 0 < low < high"
    lite = self.variant != SAVED_MODEL
    if lite and (not isinstance(self.files, dict) or set(self.files) != {"tflite", "ood"}):
      return "files does not hold the SHA-256 of the .tflite and the .ood.npz"
    return None

  def check_files(self, files: LiteFiles, tflite: bytes, ood: bytes) -> None:
    """Checks that a LiteRT variant's network and detector are the ones this metadata describes.

    Raises:
      MetadataError: naming the file that differs.
    """
    for name, path, data in (("tflite", files.tflite, tflite), ("ood", files.ood, ood)):
      if digest(data) != self.files[name]:
        raise MetadataError(
          f"{path}: not the file {files.metadata} was written for (its SHA-256 differs: damaged,"
          " or from another export). Copy the .tflite, .json and .ood.npz of one export together,"
          " or export again with txr-export-lite."
        )


SITE_PROFILE_FORMAT = 1
SITE_PROFILE_KIND = "txr_site_profile"


def model_fingerprint(path: str, remote=None) -> str:
  """'sha256:<hex>' of a model's own files, which a site profile is bound to.

  A `.tflite` file's bytes, or a SavedModel folder's saved_model.pb and
  variables/ (not what other commands add to export/).

  Args:
    path: the .tflite file or the export folder (local, or with `remote` gs://).
    remote: for paths with '://', a module with `GFile`, `listdir` and `isdir` (`tf.io.gfile`).

  Raises:
    OSError: when a file cannot be read.
  """
  fs = remote if "://" in path and remote is not None else None
  opener = fs.GFile if fs else open
  isdir = fs.isdir if fs else os.path.isdir

  def read(p):
    with opener(p, "rb") as f:
      return f.read()

  if not isdir(path):
    return "sha256:" + digest(read(path))
  variables = os.path.join(path, "variables")
  names = sorted(n.rstrip("/") for n in (fs.listdir if fs else os.listdir)(variables))
  parts = [("saved_model.pb", os.path.join(path, "saved_model.pb"))]
  parts += [(f"variables/{n}", os.path.join(variables, n)) for n in names]
  return "sha256:" + digest(b"".join(f"{n}\0{digest(read(p))}\n".encode() for n, p in parts))


@dataclasses.dataclass(frozen=True)
class SiteProfile:
  """A threshold chosen on a site's own films (txr-calibrate), for one model.

  Attributes:
    model: the model's fingerprint (`model_fingerprint`) and its path when calibrated.
    threshold: P(TB) at or above which a film is read abnormal at this site.
    rule: how the threshold was chosen, in words.
    n: films calibrated on; n_abnormal of them abnormal.
    n_abnormal: see n.
    prevalence: the programme's stated share of people screened with TB.
    sensitivity: [estimate, 95% low, high] at the threshold, on the site's films.
    specificity: likewise.
    expected_abnormal_share: [estimate, low, high] of people screened read
      abnormal at the prevalence (the bounds from the two CIs).
    date: when it was made (YYYY-MM-DD).
    scores: the scores file it was made from.
    format: SITE_PROFILE_FORMAT.
    kind: SITE_PROFILE_KIND.
  """

  model: dict
  threshold: float
  rule: str
  n: int
  n_abnormal: int
  prevalence: float
  sensitivity: list
  specificity: list
  expected_abnormal_share: list
  date: str
  scores: str = ""
  format: int = SITE_PROFILE_FORMAT
  kind: str = SITE_PROFILE_KIND

  def to_json(self) -> str:
    """The profile file's text."""
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str, source: str) -> "SiteProfile":
    """Reads and checks a site profile.

    Raises:
      MetadataError: one line naming `source`, what is wrong and what to do.
    """
    again = "make it again with txr-calibrate"
    try:
      raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise MetadataError(f"{source}: not JSON ({e}); {again}.") from None
    if not isinstance(raw, dict) or raw.get("kind") != SITE_PROFILE_KIND:
      raise MetadataError(f"{source}: not a txr site profile; {again}.")
    if raw.get("format") != SITE_PROFILE_FORMAT:
      raise MetadataError(
        f"{source}: site profile format {raw.get('format')!r}; this txr reads"
        f" {SITE_PROFILE_FORMAT}: {again}."
      )
    profile = cls(**_fields_of(cls, raw, source, again))
    threshold = profile.threshold
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
        or not 0 <= threshold <= 1 or not math.isfinite(threshold)):  # fmt: skip
      raise MetadataError(f"{source}: threshold {threshold!r} is not a probability; {again}.")
    share = profile.expected_abnormal_share
    if not (isinstance(share, list) and len(share) == 3 and all(
        isinstance(v, (int, float)) and 0 <= v <= 1 for v in share)):  # fmt: skip
      raise MetadataError(f"{source}: expected_abnormal_share is not [share, low, high]; {again}.")
    if not str(profile.model.get("fingerprint", "")).startswith("sha256:"):
      raise MetadataError(f"{source}: no model fingerprint; {again}.")
    return profile

  def check_model(self, fingerprint: str, model: str, source: str) -> None:
    """Refuses a model other than the one this profile was made for.

    Raises:
      MetadataError: naming both fingerprints.
    """
    if fingerprint != self.model["fingerprint"]:
      raise MetadataError(
        f"{source} was made for another model ({self.model['fingerprint'][:19]}..., at"
        f" {self.model.get('path', '?')}), not {model} ({fingerprint[:19]}...): a threshold"
        " holds only for the scores of the model it was chosen with. Calibrate this model"
        " with txr-calibrate."
      )

  def label(self, probability) -> int:
    """The site's label: 1 where P(TB), as the predictors print it (4 decimals), >= the threshold.

    txr-calibrate chose the threshold among the printed scores: a film printed at
    the threshold is abnormal, whatever digits the print dropped.
    """
    return int(float(f"{float(probability):.4f}") >= self.threshold)

  def rule_text(self) -> str:
    """The predictors' closing line with a site profile."""
    return (
      f"label: abnormal when probability >= {self.threshold:.4f} (this site's threshold: "
      f"{self.rule}, on {self.n} films, {self.n_abnormal} abnormal, made {self.date})"
    )

  @classmethod
  def for_model(cls, path: str, model: str, remote=None) -> "SiteProfile":
    """Reads the profile at `path` and checks it was made for `model`, as both predictors do.

    Args:
      path: the site_profile.json (local, or with `remote` gs://).
      model: the export folder or .tflite file the predictor scores with.
      remote: for paths with '://', `tf.io.gfile` (see `model_fingerprint`).

    Raises:
      MetadataError: a damaged profile, or one of another model.
      OSError: a file that cannot be read.
    """
    opener = remote.GFile if remote is not None and "://" in path else open
    with opener(path, "rb") as f:
      profile = cls.from_json(f.read(), path)
    profile.check_model(model_fingerprint(model, remote), model, path)
    return profile
