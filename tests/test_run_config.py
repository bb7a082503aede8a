"""The run config: read from txr-train's flags once, saved and loaded as JSON."""

import dataclasses

from conftest import train_flag_values
import pytest

from txr_model import run_config


def test_every_field_is_a_train_flag_and_round_trips(tmp_path):
  values = train_flag_values()
  names = {f.name for f in dataclasses.fields(run_config.RunConfig)}
  assert names <= set(values)
  values(["txr-train", "--data_dir=/d", f"--model_dir={tmp_path}", "--epochs=7"])
  config = run_config.RunConfig.from_flags(values)
  assert config.epochs == 7 and config.data_dir == "/d" and config.mode == "two_phase"
  config.save(str(tmp_path))
  assert run_config.RunConfig.load(str(tmp_path)) == config
  assert run_config.RunConfig.load(str(tmp_path / "nothing_here")) is None
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.epochs = 8
