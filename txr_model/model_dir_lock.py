"""One training run per --model_dir: a second one fails at once instead of interleaving files.

Locally the lock is an `flock` on `<model_dir>/.txr.lock`, which the kernel
releases when the process dies (kill -9 included), so a killed run resumes
without clean-up. Object stores (gs://) have no locks: there the file is a
lease that the holder rewrites every HEARTBEAT_S seconds. A lease not
rewritten for STALE_S seconds belongs to a dead run (preempted, killed) and is
taken over, so a restarted run resumes without clean-up. Two runs that start
at the same moment both write the file; each reads it back after SETTLE_S
seconds, and only the one whose write stuck goes on.
"""

import _thread
import contextlib
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

FILE = ".txr.lock"
HEARTBEAT_S = 60.0
STALE_S = 300.0  # Five missed heartbeats.
SETTLE_S = 2.0  # Far longer than a check-then-write takes.


class ModelDirInUseError(RuntimeError):
  """Another run holds --model_dir."""


@contextlib.contextmanager
def hold(model_dir: str):
  """Holds the lock on `model_dir` (which must exist) for the `with` block.

  Args:
    model_dir: the run's output folder, local or gs://.

  Yields:
    None.

  Raises:
    ModelDirInUseError: naming the other run's pid and host.
  """
  path = os.path.join(model_dir, FILE)
  if "://" in model_dir:
    with lease(path, f"--model_dir={model_dir}"):
      yield
    return
  import fcntl  # POSIX only; imported here so the module loads everywhere.

  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      other = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
      raise ModelDirInUseError(
        f"--model_dir={model_dir} in use by {other}: wait for it, or use another --model_dir."
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, _owner().encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the flock.


# Reads of an empty lease file before it counts as written by an unknown run: a
# heartbeat's local rewrite truncates, then writes (a gs:// object is replaced whole).
_TORN_READS = 10


def _owner() -> str:
  return f"pid {os.getpid()} on {socket.gethostname()}"


def _read(path: str) -> tuple[dict, float] | None:
  """(the lease's record, seconds since it was last written), or None if there is none.

  The age is the file's modification time, so a lock file of any content
  (an older txr's plain text included) expires.
  """
  try:
    for _ in range(_TORN_READS):
      age = time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9
      with tf.io.gfile.GFile(path) as f:
        text = f.read()
      if text:  # Empty: caught between a local rewrite's truncation and its write.
        break
      time.sleep(0.02)
  except tf.errors.NotFoundError:
    return None
  try:
    record = json.loads(text)
  except ValueError:
    record = {"owner": text.strip() or "an unknown run"}
  return (record if isinstance(record, dict) else {"owner": text.strip()}), age


def _write(path: str, record: dict) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(record, f)


@contextlib.contextmanager
def lease(
  path: str,
  name: str,
  heartbeat_s: float = HEARTBEAT_S,
  stale_s: float = STALE_S,
  settle_s: float = SETTLE_S,
):
  """Holds the lease file `path` (any tf.io.gfile path) for the `with` block.

  Args:
    path: the lease file.
    name: what it locks, for messages (such as '--model_dir=gs://b/run').
    heartbeat_s: how often a thread rewrites it while the block runs.
    stale_s: a lease unwritten for this long is a dead run's, and is taken over.
    settle_s: how long to wait before reading a new lease back.

  Yields:
    None.

  Raises:
    ModelDirInUseError: naming the holder, when a live run holds the lease or
      another run took it at the same moment.
    KeyboardInterrupt: in the block, when the lease is found taken over, or
      cannot be renewed for half of `stale_s` (a passing storage error is
      retried sooner, with backoff).
  """
  mine = {"owner": _owner(), "token": uuid.uuid4().hex}
  found = _read(path)
  if found and found[1] < stale_s:
    raise ModelDirInUseError(
      f"{name} in use by {found[0].get('owner')} (last heartbeat"
      f" {found[1]:.0f} s ago; a run silent for {stale_s:.0f} s is taken over)."
    )
  if found:
    logging.warning(
      "Taking over %s: its holder, %s, has been silent for %.0f s.", path, found[0].get("owner"),
      found[1],
    )  # fmt: skip
  _write(path, mine)
  time.sleep(settle_s)
  found = _read(path)
  if not found or found[0].get("token") != mine["token"]:
    raise ModelDirInUseError(
      f"{name} in use by {found[0].get('owner') if found else 'another run'},"
      " which started at the same moment."
    )
  stop = threading.Event()

  def beat():
    renewed, wait = time.time(), heartbeat_s
    while not stop.wait(wait):
      try:
        current = _read(path)
        if current and current[0].get("token") != mine["token"]:
          return _give_up(f"Lost {path} to {current[0].get('owner')}: another run took it over.")
        _write(path, mine)
        renewed, wait = time.time(), heartbeat_s
      except (tf.errors.OpError, OSError) as e:  # A passing storage error: retry sooner.
        silent = time.time() - renewed
        if silent > stale_s / 2:  # Another run may soon take it over: stop writing.
          return _give_up(f"Could not renew {path} for {silent:.0f} s ({e}).")
        wait = min(heartbeat_s, max(1.0, wait / 2))
        logging.warning("Renewing %s failed (%s): retrying in %.0f s.", path, e, wait)

  def _give_up(reason):
    logging.error("%s Stopping, so that two runs never write one folder.", reason)
    _thread.interrupt_main()  # KeyboardInterrupt in the run: its backups let it resume.

  thread = threading.Thread(target=beat, name="txr-lease", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    current = _read(path)
    if current and current[0].get("token") == mine["token"]:
      tf.io.gfile.remove(path)
