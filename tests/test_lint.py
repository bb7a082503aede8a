"""The code base stays clean under its one linter and formatter, ruff."""

import subprocess
import sys

from conftest import REPO


def test_ruff_check_and_format():
  for args in (["check", "."], ["format", "--check", "."]):
    out = subprocess.run(
      [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
