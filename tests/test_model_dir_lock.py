"""One run per --model_dir: a second fails at once naming the first; a killed run frees it."""

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import REPO
import pytest

from txr_model import model_dir_lock


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with model_dir_lock.hold(str(tmp_path)):
    with pytest.raises(model_dir_lock.ModelDirInUseError, match=f"in use by pid {os.getpid()} "):
      with model_dir_lock.hold(str(tmp_path)):
        pass
  with model_dir_lock.hold(str(tmp_path)):  # Released at the end of the block.
    pass


@pytest.mark.heavy
def test_a_killed_holder_leaves_the_folder_usable(tmp_path):
  holder = subprocess.Popen(
    [sys.executable, "-c", "import sys, time; from txr_model import model_dir_lock as m\n"
     f"with m.hold({str(tmp_path)!r}):\n  print('held', flush=True); time.sleep(120)"],
    cwd=REPO, stdout=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(model_dir_lock.ModelDirInUseError, match=f"pid {holder.pid} "):
      with model_dir_lock.hold(str(tmp_path)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with model_dir_lock.hold(str(tmp_path)):
    pass


# The gs:// lease, on a local path through the same tf.io.gfile code, with short times
# (the local file system's gfile mtime has whole seconds).
FAST = {"heartbeat_s": 0.1, "stale_s": 2.0, "settle_s": 0.05}


def test_a_live_lease_is_refused_and_a_dead_runs_lease_is_taken_over(tmp_path):
  path = str(tmp_path / model_dir_lock.FILE)
  with model_dir_lock.lease(path, "--model_dir=x", **FAST):
    time.sleep(2.5)  # longer than stale_s: only the heartbeat keeps it live
    with pytest.raises(model_dir_lock.ModelDirInUseError, match="--model_dir=x in use by pid"):
      with model_dir_lock.lease(path, "--model_dir=x", **FAST):
        pass
  assert not os.path.exists(path)  # released
  # A run killed while holding it (preempted): its file stays, and stops being rewritten.
  (tmp_path / model_dir_lock.FILE).write_text("pid 1 on a-preempted-vm")
  with pytest.raises(model_dir_lock.ModelDirInUseError, match="a-preempted-vm"):
    with model_dir_lock.lease(path, "--model_dir=x", **FAST):
      pass
  time.sleep(2.1)
  with model_dir_lock.lease(path, "--model_dir=x", **FAST):
    assert f"pid {os.getpid()} " in (tmp_path / model_dir_lock.FILE).read_text()


def test_a_lease_read_mid_rewrite_still_names_its_holder(tmp_path):
  """A reader that finds the file truncated by a heartbeat waits for the write."""
  path = tmp_path / model_dir_lock.FILE
  path.write_text("")  # truncated, its record not yet written
  writer = threading.Timer(0.05, lambda: path.write_text('{"owner": "pid 7 on vm-a"}'))
  writer.start()
  with pytest.raises(model_dir_lock.ModelDirInUseError, match="in use by pid 7 on vm-a"):
    with model_dir_lock.lease(str(path), "--model_dir=x", **FAST):
      pass
  writer.join()


def test_two_runs_starting_together_get_one_lease(tmp_path):
  path = str(tmp_path / model_dir_lock.FILE)
  start, held, refused = threading.Barrier(4), [], []

  def run():
    start.wait()
    try:
      with model_dir_lock.lease(path, "--model_dir=x", **{**FAST, "settle_s": 0.5}):
        held.append(1)
        time.sleep(1.0)
    except model_dir_lock.ModelDirInUseError:
      refused.append(1)

  threads = [threading.Thread(target=run) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(held) == 1 and len(refused) == 3


def test_a_passing_storage_error_is_retried_and_a_lasting_one_stops_the_run(tmp_path, monkeypatch):
  """Before, one error ended the heartbeat silently and the run wrote on, unprotected."""
  import tensorflow as tf

  path = str(tmp_path / model_dir_lock.FILE)
  real_write, failures = model_dir_lock._write, []

  def flaky(p, record):  # the storage fails `failures[0]` times, then answers again
    if failures and failures[0] > 0:
      failures[0] -= 1
      raise tf.errors.UnavailableError(None, None, "storage unreachable")
    real_write(p, record)

  monkeypatch.setattr(model_dir_lock, "_write", flaky)
  # The stop is a KeyboardInterrupt raised by Python's own SIGINT handler, as in a txr-train
  # process; a library loaded earlier in this test process may have put another in its place.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  with model_dir_lock.lease(path, "--model_dir=x", **FAST):
    failures.append(3)  # three failed heartbeats in a row, well inside stale_s / 2
    deadline = time.monotonic() + 30  # a loaded machine schedules the heartbeat late
    while failures != [0] and time.monotonic() < deadline:
      time.sleep(0.05)
    assert failures == [0]  # retried through them, and the run went on
  with pytest.raises(KeyboardInterrupt):
    with model_dir_lock.lease(path, "--model_dir=x", **FAST):
      failures[0] = 10**6  # the storage stays down: the run must stop before a takeover
      for _ in range(600):  # stale_s / 2 = 1 s of failures stops it; 30 s allows for load
        time.sleep(0.05)
  signal.signal(signal.SIGINT, previous)


def test_a_lease_found_taken_over_stops_the_run_and_is_left_to_its_new_holder(tmp_path):
  """A run whose heartbeat finds another run's token in the lease stops writing at once."""
  path = str(tmp_path / model_dir_lock.FILE)
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in the test above
  other = {"owner": "other-host:123", "token": "not-mine"}
  with pytest.raises(KeyboardInterrupt):
    with model_dir_lock.lease(path, "--model_dir=x", **FAST):
      model_dir_lock._write(path, other)  # another run took it over (it thought this one dead)
      for _ in range(600):  # the next heartbeat stops it; 30 s allows for load
        time.sleep(0.05)
  signal.signal(signal.SIGINT, previous)
  assert model_dir_lock._read(path)[0] == other  # not overwritten, nor removed on the way out
