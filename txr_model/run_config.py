"""A training run's settings: made once from the flags, passed down, saved as JSON.

txr-train writes `run_config.json` into --model_dir; txr-evaluate reads the
dataset and data_dir back from it.
"""

import dataclasses
import json
import os

import tensorflow as tf

FILE = "run_config.json"
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
  image_size: int
  global_batch_size: int
  mode: str
  weights: str
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
    """Writes the config as JSON to `<model_dir>/run_config.json` (local or gs://)."""
    with tf.io.gfile.GFile(os.path.join(model_dir, FILE), "w") as f:
      json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)

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
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path) as f:
      saved = json.load(f)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(saved) - names), sorted(names - set(saved))
    if unknown or missing:
      raise ValueError(
        f"{path} is not a run_config.json this txr release reads (unknown settings:"
        f" {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}): use the"
        " release that wrote it, or train afresh."
      )
    return cls(**saved)
