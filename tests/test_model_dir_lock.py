"""One run per --model_dir: a second fails at once naming the first; a killed run frees it."""

import os
import signal
import subprocess
import sys

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
