"""One training run per --model_dir: a second one fails at once instead of interleaving files.

Locally the lock is an `flock` on `<model_dir>/.txr.lock`, which the kernel
releases when the process dies (kill -9 included), so a killed run resumes
without clean-up. Object stores (gs://) have no locks: there the file itself
is the lock, written at the start and removed at the end, and a run that was
killed leaves it behind for a person to remove.
"""

import contextlib
import os
import socket

import tensorflow as tf

FILE = ".txr.lock"


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
  owner = f"pid {os.getpid()} on {socket.gethostname()}"
  if "://" in model_dir:
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        other = f.read().strip()
      raise ModelDirInUseError(
        f"--model_dir={model_dir} in use by {other}; if that run is dead, delete {path}."
      )
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(owner)
    try:
      yield
    finally:
      tf.io.gfile.remove(path)
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
    os.pwrite(fd, owner.encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the flock.
