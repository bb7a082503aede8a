"""Bazel py_test main: runs pytest on the test file passed as the first argument."""

import os
import sys

import pytest

if __name__ == "__main__":
  args = [sys.argv[1], "-q", "-p", "no:cacheprovider", *sys.argv[2:]]
  if "XML_OUTPUT_FILE" in os.environ:  # Bazel's per-test-case report (bazel-testlogs/.../test.xml)
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  sys.exit(pytest.main(args))
