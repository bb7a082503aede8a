"""A training run's settings: made once from the flags, passed down, saved as JSON.

The one source of what a run was: txr-train writes `run_config.json` (and, from
the same values, `flags.cfg` for reruns) into --model_dir; txr-evaluate and
txr-export-lite read it back (the dataset, data_dir, seed and age bands).
"""

import dataclasses
import json
import os

from absl import app
from etils import epath

from txr_model import metrics
from txr_model import run_dir

FILE = "run_config.json"
# Settings added since run_config.json was first written, with the value a run that did not
# record them used: such a run's file still loads.
ADDED = {"age_bands": metrics.AGE_BANDS, "backbone": "inception_v3", "init_from": ""}
# Fields that say where a run reads and writes, not what it does.
PLACES = ("data_dir", "manual_dir", "model_dir", "tpu")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """What a txr-train run was asked to do. Each field is the flag of the same name.

  No defaults here: the flags hold them, so a value has one source.
  """

  dataset: str
  data_dir: str
  manual_dir: str | None
  model_dir: str
  strategy: str
  tpu: str
  num_gpus: int
  num_cpu_devices: int
  backbone: str
  image_size: int
  global_batch_size: int
  mode: str
  weights: str
  init_from: str
  dropout: float
  epochs: int
  fine_tune_epochs: int
  fine_tune_blocks: int
  learning_rate: float
  fine_tune_learning_rate: float
  weight_decay: float
  warmup_epochs: float
  early_stopping_patience: int
  mixed_precision: str
  seed: int
  folds: int
  cache_features: bool
  cache_views: int
  steps_per_execution: int
  age_bands: str

  @classmethod
  def from_flags(cls, flag_values) -> "RunConfig":
    """Reads each field from the absl flag of the same name.

    Args:
      flag_values: parsed absl FlagValues (txr-train's).

    Returns:
      The config.
    """
    return cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls)})

  def save(self, model_dir: str) -> None:
    """Writes `<model_dir>/run_config.json`, and `flags.cfg` with the same values (local or gs://).

    flags.cfg reruns the run: txr-train --flagfile=<model_dir>/flags.cfg.
    """
    folder = epath.Path(model_dir)
    (folder / FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))
    (folder / run_dir.FLAGFILE).write_text(self.flagfile_text())

  def flagfile_text(self) -> str:
    """The settings as txr-train's flags, one per line (a None setting is left at its default)."""
    lines = []
    for name, value in dataclasses.asdict(self).items():
      if value is None:
        continue
      text = str(value).lower() if isinstance(value, bool) else value
      lines.append(f"--{name}={text}\n")
    return "".join(lines)

  def differences(self, earlier: "RunConfig") -> list[str]:
    """The settings that shape a run's result in which `earlier` differs, as 'name: old -> new'.

    Where a run is read from and written to (data_dir, manual_dir, model_dir,
    the TPU's address) shapes nothing: a resumed run may move.
    """
    return [
      f"--{f.name}: {getattr(earlier, f.name)!r} -> {getattr(self, f.name)!r}"
      for f in dataclasses.fields(self)
      if f.name not in PLACES and getattr(self, f.name) != getattr(earlier, f.name)
    ]

  @classmethod
  def load(cls, model_dir: str) -> "RunConfig | None":
    """Reads `<model_dir>/run_config.json`; None if the run wrote none.

    Args:
      model_dir: a txr-train output directory.

    Returns:
      The config, or None.

    Raises:
      ValueError: the file holds settings this release does not know, or lacks some.
    """
    path = os.path.join(model_dir, FILE)
    if not epath.Path(path).exists():
      return None
    saved = {**ADDED, **json.loads(epath.Path(path).read_text())}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(saved) - names), sorted(names - set(saved))
    if unknown or missing:
      raise ValueError(
        f"{path} is not a run_config.json this txr release reads (unknown settings:"
        f" {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}): use the"
        " release that wrote it, or train afresh."
      )
    return cls(**saved)


def training_run(model_dir: str) -> tuple["RunConfig | None", int | None]:
  """(the run's RunConfig or None, the fold's index or None) of a run or fold folder.

  A fold's folder holds no run_config.json of its own: its cross-validation run's is read.

  Raises:
    app.UsageError: a run_config.json this release cannot read, in one line.
  """
  try:
    trained = RunConfig.load(model_dir)
    if trained is not None:
      return trained, None
    fold = run_dir.fold_index(model_dir)
    if fold is not None:
      parent = RunConfig.load(os.path.dirname(os.path.normpath(model_dir)))
      if parent is not None and parent.folds:
        return parent, fold
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  return None, None


@dataclasses.dataclass(frozen=True)
class Settings:
  """What shapes txr-evaluate's figures besides its data: the run's, unless a flag differs."""

  seed: int
  age_bands: str
  overridden: tuple[str, ...] = ()  # 'name=value (the run's: value)' per flag that differs


def evaluation_settings(trained: RunConfig | None, seed=None, age_bands=None) -> Settings:
  """The evaluation's seed and age bands: the flags given, else the training run's.

  Args:
    trained: the run's config (None without one: txr's defaults).
    seed: --seed, or None when not given.
    age_bands: --age_bands, or None when not given.

  Returns:
    The settings, with each given flag that differs from the run's noted.
  """
  run = {"seed": 0, "age_bands": metrics.AGE_BANDS}
  if trained is not None:
    run = {name: getattr(trained, name) for name in run}
  given = {"seed": seed, "age_bands": age_bands}
  overridden = tuple(
    f"--{name}={value} (the run's: {run[name]})"
    for name, value in given.items()
    if value is not None and value != run[name]
  )
  chosen = {name: run[name] if given[name] is None else given[name] for name in run}
  return Settings(**chosen, overridden=overridden)


def check_model_dirs(config: RunConfig, overwrite: bool) -> None:
  """Refuses a --model_dir run or --init_from this run cannot use, before anything is created.

  Reads a few small files and imports no TensorFlow, so that txr-train answers
  before its 6-second import (train.py calls it before `training.run`).

  Args:
    config: the run's settings.
    overwrite: --overwrite: an earlier run in --model_dir is to be removed, not resumed.

  Raises:
    app.UsageError: saying what is wrong and the ways on.
  """
  if not overwrite:
    _check_same_recipe(config)
  if config.init_from:
    _check_parent(config)


def _check_same_recipe(config):
  """Refuses a rerun into --model_dir whose settings differ from the run already there.

  The rerun would resume that run's backups and best checkpoint, train nothing
  new, and then report and export the old weights under the new settings.
  """
  try:
    earlier = RunConfig.load(config.model_dir)
  except ValueError as e:
    raise app.UsageError(f"{e} Or pass --overwrite.") from None
  differences = [] if earlier is None else config.differences(earlier)
  if differences:
    raise app.UsageError(
      f"--model_dir={config.model_dir} holds a run with other settings"
      f" ({'; '.join(differences)}): resuming it would train nothing and export its weights"
      " under the new settings. Give another --model_dir, or pass --overwrite to train afresh"
      " there."
    )


def _check_parent(config):
  """Refuses an --init_from that is not a finished run with this run's backbone and image size."""
  parent = config.init_from
  try:
    earlier = RunConfig.load(parent)
  except ValueError as e:
    raise app.UsageError(f"--init_from={parent}: {e}") from None
  if earlier is None:
    raise app.UsageError(
      f"--init_from={parent}: no {FILE} there; give the --model_dir of a finished txr-train run."
    )
  if (earlier.backbone, earlier.image_size) != (config.backbone, config.image_size):
    raise app.UsageError(
      f"--init_from={parent}: its model is {earlier.backbone} at {earlier.image_size} px, this"
      f" run's {config.backbone} at {config.image_size} px; pass --backbone={earlier.backbone}"
      f" --image_size={earlier.image_size}, or start from another run."
    )
  if not (epath.Path(parent) / run_dir.MODEL).exists():
    where = "a cross-validation run: give a run without --folds" if earlier.folds else (
      "it has not finished: rerun its command to finish it"
    )  # fmt: skip
    raise app.UsageError(f"--init_from={parent}: no {run_dir.MODEL} there ({where}).")
