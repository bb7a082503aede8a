"""Bazel py_test main: runs pytest on the test file passed as the first argument."""

import os
import sys

import pytest

if __name__ == "__main__":
  # -n 0: Bazel already runs test files in parallel; no pytest-xdist workers inside.
  args = [sys.argv[1], "-q", "-p", "no:cacheprovider", "-n", "0", *sys.argv[2:]]
  if "XML_OUTPUT_FILE" in os.environ:  # Bazel's per-test-case report (bazel-testlogs/.../test.xml)
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  sys.exit(pytest.main(args))
