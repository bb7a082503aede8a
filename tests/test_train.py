"""The trainer as users run it, in subprocesses: strategies, cross-validation, usage errors.

Heavy (all but the flag validators): each test starts TensorFlow processes; they train
MobileNetV3Small at 32 px (conftest.TINY): what they check does not depend on the network.
"""

import json
import os
import re
import socket
import subprocess
import sys

from conftest import REPO
from conftest import TINY
from conftest import TRAIN
from conftest import run_ok
from conftest import train_flag_values
import pytest

MIRRORED = """
from txr_model import strategy as s
s.configure_cpu_devices(2)
import keras, numpy as np, tensorflow as tf
from txr_model import input_pipeline as ip, model as m
strategy = s.get_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
config = ip.InputConfig("shenzhen_cxr/512", {data_dir!r}, 32, 8, training=True,
                        drop_remainder=True, repeat=True)
ds = ip.distributed_dataset(strategy, config)
with strategy.scope():
  model = m.build_model(32, {weights!r}, backbone="mobilenet_v3_small")
  model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
before = [w.numpy().copy() for w in model.trainable_weights]
loss = model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0).history["loss"][0]
assert np.isfinite(loss), loss
assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
print("replicas", strategy.num_replicas_in_sync, "loss", loss)
"""


@pytest.mark.heavy
def test_mirrored_strategy_over_two_logical_cpus(built_data_dir, tiny_base_weights):
  script = MIRRORED.format(data_dir=built_data_dir, weights=tiny_base_weights)
  out = run_ok([sys.executable, "-c", script])
  assert "replicas 2 loss" in out.stdout


def _free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def _workers(args_for, n=2):
  """Starts n local workers with TF_CONFIG; returns their CompletedProcess-like results."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(n)]}
  procs = []
  for i in range(n):
    env = dict(
      os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
    )
    procs.append(
      subprocess.Popen(
        args_for(i), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
      )
    )
  try:
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]
  finally:
    for p in procs:
      p.kill()


@pytest.mark.heavy
def test_multi_worker_training_with_the_real_entry_point(
  built_data_dir, tiny_base_weights, tmp_path
):
  args = [*TRAIN, *TINY, "--strategy=multi_worker_mirrored", f"--data_dir={built_data_dir}"]
  args += [f"--weights={tiny_base_weights}"]
  # The head phase on cached features, phase 2 on images: both under the strategy.
  args += [f"--model_dir={tmp_path}", "--epochs=1", "--fine_tune_epochs=1", "--cache_features"]
  results = _workers(lambda i: args)
  for code, log in results:
    assert code == 0, log[-4000:]
    assert "2 replica(s), global batch 8" in log
    assert "Phase head_cached" in log and "Phase fine_tune" in log
  assert (tmp_path / "export" / "saved_model.pb").exists()
  assert (tmp_path / "metrics.json").exists()
  # The other worker keeps its backups in a folder of its own, and writes no outputs.
  worker = tmp_path / "worker_worker_1"
  assert (worker / "backup" / "fine_tune" / "training_metadata.json").exists()
  assert not (worker / "model.keras").exists() and not (worker / "export").exists()


GUARD = """
import keras, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
def dataset(ctx):
  x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
  return tf.data.Dataset.from_tensor_slices((x, x[:, :1] > 0)).repeat().batch(4)
ds = strategy.distribute_datasets_from_function(dataset)
with strategy.scope():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
  model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
print("fit ok")
"""


@pytest.mark.heavy
def test_keras_patch_is_needed_on_this_version():
  from txr_model import keras_compat

  assert keras_compat.is_affected()
  assert not keras_compat.is_affected((3, 16, 0)) and not keras_compat.is_affected((2, 15, 0))
  # Unpatched, Keras's fit fails on two workers; patched, it is what
  # test_multi_worker_training_with_the_real_entry_point trains through.
  unpatched = _workers(lambda i: [sys.executable, "-c", GUARD])
  assert all(code != 0 for code, _ in unpatched)
  assert any("Invalid reduction dimension" in log or "PerReplica" in log for _, log in unpatched)


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--image_size=50"], "--image_size=50: inception_v3 needs 75 or more"),
    (["--image_size=31", "--backbone=mobilenet_v3_small"], "image_size"),
    (["--backbone=densenet121", "--fine_tune_blocks=6"], "densenet121 has 5 blocks"),
    (["--backbone=resnet50"], "backbone"),
    (["--strategy=warp"], "strategy"),
    (["--strategy=tpu", "--tpu=my-tpu"], "gs://"),
    (["--folds=2"], "--folds needs 3 or more"),
    (["--mode=two_phase", "--weights=none"], "--mode=two_phase needs pretrained --weights"),
    (["--mode=end_to_end", "--cache_features"], "--cache_features needs --mode=two_phase"),
    (["--strategy=tpu", "--mixed_precision=mixed_float16"], "float16 is not for TPUs"),
  ],
)
def test_flags_that_contradict_are_refused_when_parsed(tmp_path, flags, message):
  """The flag validators, in this process (tests/test_cli.py runs the command on bad flags)."""
  from absl import flags as absl_flags

  values = train_flag_values()
  with pytest.raises(absl_flags.Error, match=re.escape(message)):
    values(["txr-train", "--data_dir=/nonexistent", f"--model_dir={tmp_path}", *flags])


@pytest.mark.heavy
@pytest.mark.parametrize(
  "flags,message",
  [
    (["--strategy=tpu"], "--strategy=tpu: no TPU found"),
    (["--global_batch_size=7", "--strategy=mirrored", "--num_cpu_devices=2"], "not a multiple"),
    (["--strategy=mirrored"], "--strategy=mirrored found no GPU"),
  ],
)
def test_strategy_and_replica_errors_fail_fast_and_clearly(tmp_path, flags, message):
  args = [*TRAIN, "--data_dir=/nonexistent", f"--model_dir={tmp_path}", *flags]
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and message in out.stderr + out.stdout
  assert not (tmp_path / "flags.cfg").exists()


@pytest.mark.heavy
def test_missing_data_dir_is_a_usage_error(tmp_path):
  out = subprocess.run(
    [*TRAIN, f"--model_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert out.returncode != 0 and "--data_dir" in out.stderr


@pytest.mark.heavy
def test_cross_validation_over_both_sites_then_txr_evaluate(
  built_data_dir, tiny_base_weights, tmp_path
):
  # Both embedded samples at once (64 Shenzhen + 20 Montgomery images), in 3 folds.
  args = [*TRAIN, *TINY, f"--data_dir={built_data_dir}", f"--model_dir={tmp_path}"]
  args += [f"--weights={tiny_base_weights}", "--dataset=shenzhen_cxr/512+montgomery_cxr/512"]
  out = run_ok(args + ["--folds=3", "--epochs=1", "--fine_tune_epochs=0"])
  assert "3-fold cross-validation AUC" in out.stdout and "Pooled out-of-fold: AUC" in out.stdout
  # One epoch of 3 steps: the first loss is log 2 (the classifier starts at zero); the
  # epoch's mean stays near it (a loss of 3 to 9 would be a bug, not noise).
  log = (out.stdout + out.stderr).splitlines()
  losses = [float(line.split("- loss: ")[1].split()[0]) for line in log if "- loss: " in line]
  assert len(losses) == 3 and all(abs(loss - 0.693) < 0.05 for loss in losses), losses
  cv_metrics = tmp_path / "cv_metrics.json"
  summary = json.loads(cv_metrics.read_text())
  assert len(summary["fold_aucs"]) == 3 and summary["sd"] is not None
  # Each fold's test set is one dealt group: 84 / 3 images, both sites in each.
  for k in range(3):
    fold = summary["folds"][f"fold_{k}"]
    assert fold["n"] == 28 and set(fold["by_group"]) == {"shenzhen_cxr/512", "montgomery_cxr/512"}
    assert (tmp_path / f"fold_{k}" / "model.keras").exists()
    assert not (tmp_path / f"fold_{k}" / "export").exists()  # Folds are estimates, not exports.
    # The log says what was written, and only that.
    assert f"Wrote {tmp_path / f'fold_{k}' / 'model.keras'}" in out.stderr
    assert f"Wrote {tmp_path / f'fold_{k}' / 'export'}" not in out.stderr
  # Pooled out of fold: every image once, with a CI; per site with its N.
  pooled = summary["pooled"]
  assert pooled["n"] == 84 and pooled["n_positive"] == 42
  assert pooled["auc_ci95"][0] <= pooled["auc"] <= pooled["auc_ci95"][1]
  assert {name: g["n"] for name, g in pooled["by_group"].items()} == {
    "shenzhen_cxr/512": 64, "montgomery_cxr/512": 20
  }  # fmt: skip
  assert sum(pooled["operating_points"]["triage"][k] for k in ("tp", "fp", "tn", "fn")) == 84
  assert pooled["calibration"]["n"] == 84
  # Subgroups pooled out of fold: every image in one group of each attribute, each site its own.
  for attribute in ("sex", "age", "site"):
    assert sum(g["n"] for g in pooled["subgroups"][attribute].values()) == 84, attribute
  assert {name: g["n"] for name, g in pooled["subgroups"]["site"].items()} == {
    "shenzhen_cxr/512": 64, "montgomery_cxr/512": 20
  }  # fmt: skip
  assert (tmp_path / "fold_0" / "MODEL_CARD.md").read_text().startswith("---\nlicense: ")
  assert "Subgroups, at the thresholds chosen on validation" in out.stdout

  # txr-evaluate on the run: each fold's model on its own held-out fold, into a folder of its own.
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"}
  evaluated = run_ok([sys.executable, "-m", "txr_model.evaluate", f"--model_dir={tmp_path}"])
  out_dir = tmp_path / "evaluation" / "shenzhen_cxr_512+montgomery_cxr_512_cross_validation"
  again = json.loads((out_dir / "cv_metrics.json").read_text())
  # One way to pool (evaluation.cross_validation_report): the same figures from either command.
  assert again["pooled"] == pooled and again["fold_aucs"] == summary["fold_aucs"]
  assert json.loads(evaluated.stdout) == again and "Pooled out-of-fold: AUC" in evaluated.stderr
  assert all(p.read_bytes() == data for p, data in before.items())  # the run's files untouched
  assert (out_dir / "fold_2" / "reliability.png").read_bytes().startswith(b"\x89PNG")


def test_overwrite_clears_the_earlier_run_but_not_the_lock_or_the_workers_folders(tmp_path):
  from txr_model import model_dir_lock
  from txr_model import run_dir
  from txr_model import training

  for name in (run_dir.BEST_WEIGHTS, run_dir.METRICS, model_dir_lock.FILE):
    (tmp_path / name).write_text("x")
  for folder in (run_dir.BACKUP, run_dir.EXPORT, os.path.basename(run_dir.worker_dir("", "w", 1))):
    (tmp_path / folder / "inner").mkdir(parents=True)
  training._start_afresh(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == [model_dir_lock.FILE, "worker_w_1"]
