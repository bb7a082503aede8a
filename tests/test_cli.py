"""Usage errors: one line on stderr, exit 2, nothing created."""

import os
import subprocess
import sys

from absl import app
from conftest import REPO
from conftest import SAMPLE_ROOT
from conftest import saved_model_stub
import pytest

from txr_model import cli


def _run(module, *args):
  return subprocess.run(
    [sys.executable, "-m", f"txr_model.{module}", *args], cwd=REPO, capture_output=True, text=True
  )


def _error_line(out) -> str:
  lines = [line for line in out.stderr.splitlines() if ".py: error: " in line]
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  # Only TensorFlow's start-up chatter may surround it: no help text, no traceback.
  assert "Traceback" not in out.stderr and "--helpfull" not in out.stderr
  return lines[0]


def test_a_file_where_a_folder_belongs_is_a_usage_error(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  for name in ("data_dir", "model_dir", "explain_dir"):
    with pytest.raises(app.UsageError, match=f"--{name}={a_file} is a file, not a folder"):
      cli.check_folder_flag(name, str(a_file))
  cli.check_folder_flag("model_dir", str(tmp_path / "new"))  # Missing is fine: it is created.
  with pytest.raises(app.UsageError, match="--data_dir=.* is a file"):
    cli.dataset_builder("shenzhen_cxr/512", str(a_file))


@pytest.mark.heavy
def test_usage_errors_are_one_line_and_create_nothing(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  model_dir = tmp_path / "model"
  data = f"--data_dir={tmp_path / 'data'}"
  line = _error_line(_run("train", "--dataset=no_such_ds", data, f"--model_dir={model_dir}"))
  assert "--dataset=no_such_ds" in line and "not found" in line
  assert not model_dir.exists() and not (tmp_path / "data").exists()

  export_dir = saved_model_stub(tmp_path / "export")
  line = _error_line(
    _run("predict", f"--export_dir={export_dir}", "--explain", f"--explain_dir={a_file}", "x.png")
  )
  assert f"--explain_dir={a_file} is a file" in line


# Runs a command's module as `python -m` does, after `prelude`; then says on stderr
# whether TensorFlow was loaded.
_AS_MAIN = (
  "import atexit, runpy, sys; module = sys.argv.pop(1); exec(sys.argv.pop(1));"
  " sys.argv[0] = module.replace('.', '/') + '.py';"
  " atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in sys.modules,"
  " file=sys.stderr)); runpy.run_module(module, run_name='__main__')"
)


def _run_as_main(module, *args, prelude=""):
  return subprocess.run(
    [sys.executable, "-c", _AS_MAIN, f"txr_model.{module}", prelude, *args],
    cwd=REPO, capture_output=True, text=True,
  )  # fmt: skip


def _run_counting_tensorflow(module, *args):
  out = _run_as_main(module, *args)
  assert out.stderr.rstrip().endswith("tensorflow loaded: False"), out.stderr[-2000:]
  return out


def test_a_rerun_with_other_settings_into_a_run_folder_is_refused_before_any_work(tmp_path):
  """It would resume the old run, train nothing and export its weights as the new recipe's.

  Answered before TensorFlow loads (it took the 6-second import first).
  """
  from conftest import train_flag_values

  from txr_model import run_config

  model_dir, data_dir = tmp_path / "model", tmp_path / "data"
  values = train_flag_values()
  values(["txr-train", f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--seed=0"])
  model_dir.mkdir()
  run_config.RunConfig.from_flags(values).save(str(model_dir))
  before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
  assert sorted(before) == ["flags.cfg", run_config.FILE]
  args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--seed=7", "--epochs=8"]
  line = _error_line(_run_counting_tensorflow("train", *args))
  assert "--epochs: 5 -> 8" in line and "--seed: 0 -> 7" in line
  assert "another --model_dir" in line and "--overwrite" in line
  assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # nothing touched
  assert not data_dir.exists()
  # An --init_from that is no finished run, likewise (the run folder's own check passed).
  parent = tmp_path / "not_a_run"
  parent.mkdir()
  line = _error_line(
    _run_counting_tensorflow(
      "train", f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'child'}",
      f"--init_from={parent}", "--mode=end_to_end", "--weights=none",
    )
  )  # fmt: skip
  assert f"--init_from={parent}: no {run_config.FILE} there" in line
  assert not (tmp_path / "child").exists() and not data_dir.exists()


@pytest.mark.heavy
def test_evaluate_on_a_dataset_not_built_says_how_to_build_it(tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  (model_dir / "model.keras").write_bytes(b"")  # only its presence is checked first
  data_dir = tmp_path / "data"
  line = _error_line(
    _run("evaluate", f"--model_dir={model_dir}", "--dataset=montgomery_cxr/512",
         f"--data_dir={data_dir}", "--split=all")
  )  # fmt: skip
  assert f"montgomery_cxr/512 is not built in {data_dir}" in line
  assert f"tfds build txr_data/montgomery_cxr --config=512 --data_dir={data_dir}" in line
  assert not (model_dir / "evaluation").exists()


@pytest.mark.heavy
def test_export_lite_on_a_run_whose_dataset_is_not_built_says_so_before_any_work(tmp_path):
  """With only an older version built, it started downloading the NLM archive (offline: a
  traceback after 213 s)."""
  from conftest import train_flag_values

  from txr_model import run_config

  model_dir, data_dir = tmp_path / "model", tmp_path / "data"
  values = train_flag_values()
  values(["txr-train", f"--data_dir={data_dir}", f"--model_dir={model_dir}"])
  model_dir.mkdir()
  run_config.RunConfig.from_flags(values).save(str(model_dir))
  (model_dir / "model.keras").write_bytes(b"")  # only its presence is checked first
  older = data_dir / "shenzhen_cxr" / "512" / "1.0.0"  # an older release's build only
  older.mkdir(parents=True)
  (older / "dataset_info.json").write_text("{}")
  line = _error_line(_run("export_lite", f"--model_dir={model_dir}"))
  assert f"shenzhen_cxr/512 is not built in {data_dir}" in line
  assert not (model_dir / "export").exists()


@pytest.mark.heavy
def test_export_lite_without_the_litert_interpreter_says_which_extra_before_any_work(tmp_path):
  """The base install has no ai-edge-litert: the conversion ran, then an ImportError's traceback."""
  hidden = "sys.modules['ai_edge_litert'] = None"  # `import ai_edge_litert` now fails
  out = _run_as_main("export_lite", f"--model_dir={tmp_path / 'model'}", prelude=hidden)
  line = _error_line(out)
  assert "needs the LiteRT interpreter" in line and "pip install '.[lite]'" in line
  assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--learning_rate=nan", "--learning_rate must be a finite number"),
    ("--weight_decay=inf", "--weight_decay must be a finite number"),
    ("--epochs=abc", "--epochs"),
    ("--no_such_flag", "no_such_flag"),
    # These two look for GPUs: TensorFlow in a process of its own.
    pytest.param(
      "--strategy=one_device", "--strategy=one_device found no GPU", marks=pytest.mark.heavy
    ),
    pytest.param("--num_gpus=2", "--num_gpus=2 but 0 GPU(s) are visible", marks=pytest.mark.heavy),
  ],
)
def test_bad_flags_and_absent_hardware_are_one_line_usage_errors(tmp_path, flag, message):
  model_dir = tmp_path / "model"
  strategy = ["--strategy=one_device"] if flag == "--num_gpus=2" else []
  args = [f"--data_dir={tmp_path / 'data'}", f"--model_dir={model_dir}", *strategy, flag]
  assert message in _error_line(_run("train", *args))
  assert not model_dir.exists()


def test_txr_train_checks_its_flags_before_tensorflow_loads():
  """A mistyped flag is answered at once, not after TensorFlow's import (about 6 s)."""
  code = (
    "import sys, txr_model.train; print(sorted({m.split('.')[0] for m in sys.modules}"
    " & {'tensorflow', 'keras', 'tensorflow_datasets'}))"
  )
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def test_a_dataset_another_run_built_meanwhile_is_used_not_a_crash(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  import txr_data
  from txr_model import training

  data_dir = str(tmp_path / "data")
  ours, theirs = (tfds.builder("shenzhen_cxr/512", data_dir=data_dir) for _ in range(2))
  build = ours.download_and_prepare

  def beaten_to_it(**kwargs):  # The other run finishes first; our rename then fails.
    theirs.download_and_prepare(**kwargs)
    build(**kwargs)
    raise OSError(f"[Errno 39] Directory not empty: '{ours.data_dir}'")

  monkeypatch.setattr(ours, "download_and_prepare", beaten_to_it)
  config = type("Config", (), {"data_dir": data_dir, "manual_dir": txr_data.SAMPLE_DIR})
  training._prepare(ours, config, chief=True)
  assert ours.is_prepared()
  with pytest.raises(OSError):  # A failure that built nothing is not hidden.
    training._prepare(
      tfds.builder("montgomery_cxr/512", data_dir=str(tmp_path / "other")), config, chief=True
    )


def test_a_folder_that_cannot_be_written_is_a_usage_error_before_any_work(tmp_path):
  import os

  locked = tmp_path / "export"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    if os.access(locked, os.W_OK):  # root ignores the mode: a file where the folder goes
      locked.chmod(0o700)
      locked.rmdir()
      locked.write_text("")
    with pytest.raises(app.UsageError, match=f"{locked}: cannot write there"):
      cli.check_writable(str(locked), str(locked))
  finally:
    if locked.is_dir():
      locked.chmod(0o700)
  cli.check_writable("new", str(tmp_path / "new" / "deeper"))  # created, probe removed
  assert list((tmp_path / "new" / "deeper").iterdir()) == []


@pytest.mark.heavy
@pytest.mark.parametrize("command", ["evaluate", "export_lite"])
def test_a_run_folder_another_command_holds_is_refused(tmp_path, command):
  """txr-train may be rewriting model.keras and export/ (it holds the folder's lock)."""
  from conftest import train_flag_values
  import tensorflow_datasets as tfds

  from txr_model import model_dir_lock
  from txr_model import run_config

  model_dir, data_dir = tmp_path / "model", tmp_path / "data"
  values = train_flag_values()
  values(["txr-train", f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--image_size=75"])
  model_dir.mkdir()
  run_config.RunConfig.from_flags(values).save(str(model_dir))
  (model_dir / "model.keras").write_bytes(b"")
  builder = tfds.builder("shenzhen_cxr/512", data_dir=str(data_dir))
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.path.dirname(SAMPLE_ROOT))
  )
  with model_dir_lock.hold(str(model_dir)):
    line = _error_line(_run(command, f"--model_dir={model_dir}"))
  assert "in use by pid" in line, line


def test_a_run_config_this_release_cannot_read_is_one_line_in_every_command(tmp_path):
  """txr-evaluate let the ValueError through: a traceback (txr-train and txr-export-lite
  answered in one line)."""
  import dataclasses
  import json

  from txr_model import run_config
  from txr_model import run_dir

  model_dir = tmp_path / "model"
  model_dir.mkdir()
  fields = {f.name: None for f in dataclasses.fields(run_config.RunConfig)}
  path = model_dir / run_config.FILE
  path.write_text(json.dumps({**fields, "from_a_later_txr": 1}))
  message = f"{path} is not a run_config.json this txr release reads"
  for folder in (model_dir, run_dir.fold_dir(str(model_dir), 0)):  # a run, or one of its folds
    with pytest.raises(app.UsageError, match=message):
      run_config.training_run(str(folder))  # txr-evaluate's reading
  rerun = run_config.RunConfig(**{**fields, "model_dir": str(model_dir), "init_from": ""})
  with pytest.raises(app.UsageError, match=message):
    run_config.check_model_dirs(rerun, overwrite=False)
