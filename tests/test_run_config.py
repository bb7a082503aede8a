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


def _config(tmp_path, *flags):
  values = train_flag_values()
  values(["txr-train", "--data_dir=/d", f"--model_dir={tmp_path}", *flags])
  return run_config.RunConfig.from_flags(values)


def test_differences_name_each_setting_that_shapes_the_result_and_ignore_places(tmp_path):
  earlier = _config(tmp_path, "--seed=0", "--epochs=4")
  moved = dataclasses.replace(earlier, data_dir="gs://b/d", model_dir="gs://b/m", manual_dir="/m")
  assert moved.differences(earlier) == []  # a resumed run may read and write elsewhere
  other = _config(tmp_path, "--seed=7", "--epochs=8", "--image_size=80")
  assert other.differences(earlier) == [
    "--image_size: 299 -> 80", "--epochs: 4 -> 8", "--seed: 0 -> 7",
  ]  # fmt: skip


def test_a_config_with_unknown_or_missing_settings_is_refused_naming_them(tmp_path):
  import json

  config = _config(tmp_path)
  config.save(str(tmp_path))
  path = tmp_path / run_config.FILE
  saved = json.loads(path.read_text())
  saved["from_the_future"] = 1
  del saved["seed"]
  path.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="unknown settings: from_the_future; missing: seed"):
    run_config.RunConfig.load(str(tmp_path))


def test_flags_cfg_says_what_run_config_json_says(tmp_path):
  """Both are written from the config: rerunning with flags.cfg makes the same config."""
  config = _config(tmp_path, "--seed=7", "--age_bands=0-14,15+", "--cache_features")
  config.save(str(tmp_path))
  values = train_flag_values()
  values(["txr-train", f"--flagfile={tmp_path / 'flags.cfg'}"])
  assert run_config.RunConfig.from_flags(values) == config == run_config.RunConfig.load(tmp_path)
  assert "--overwrite" not in (tmp_path / "flags.cfg").read_text()  # a rerun resumes


def test_a_run_config_from_before_age_bands_were_saved_loads_with_the_bands_it_used(tmp_path):
  import json

  _config(tmp_path).save(str(tmp_path))
  path = tmp_path / run_config.FILE
  saved = json.loads(path.read_text())
  del saved["age_bands"]
  path.write_text(json.dumps(saved))
  assert run_config.RunConfig.load(str(tmp_path)).age_bands == "0-17,18-39,40-59,60+"


def test_evaluate_takes_the_runs_seed_and_age_bands_unless_a_flag_differs(tmp_path):
  _config(tmp_path, "--seed=7", "--age_bands=0-14,15+").save(str(tmp_path))
  trained = run_config.RunConfig.load(str(tmp_path))
  chosen, settings = run_config.evaluation_settings, run_config.Settings
  assert chosen(trained) == settings(7, "0-14,15+")
  assert chosen(trained, seed=7) == settings(7, "0-14,15+")  # the run's own: nothing to note
  assert chosen(trained, seed=3, age_bands="0-17,18+") == settings(
    3, "0-17,18+", ("--seed=3 (the run's: 7)", "--age_bands=0-17,18+ (the run's: 0-14,15+)")
  )
  assert chosen(None) == settings(0, "0-17,18-39,40-59,60+")
