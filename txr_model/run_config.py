"""A training run's settings: made once from the flags, passed down, saved as JSON.

txr-train writes `run_config.json` into --model_dir; txr-evaluate reads the
dataset and data_dir back from it.
"""

import dataclasses
import json
import os

import tensorflow as tf

FILE = "run_config.json"


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
  augment_ramp_epochs: float
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

  @classmethod
  def load(cls, model_dir: str) -> "RunConfig | None":
    """Reads `<model_dir>/run_config.json`; None if the run wrote none.

    Args:
      model_dir: a txr-train output directory.

    Returns:
      The config, or None.
    """
    path = os.path.join(model_dir, FILE)
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path) as f:
      return cls(**json.load(f))
