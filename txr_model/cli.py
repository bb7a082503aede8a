"""What the command-line entry points share. absl only, so txr-predict stays light."""

import os

from absl import app
from absl import flags


def run(main, required_flags: tuple[str, ...] = ()) -> None:
  """Runs an absl `main` as a console script (txr-train, txr-evaluate, txr-predict).

  Args:
    main: the absl main function.
    required_flags: flags to mark required before parsing.
  """
  if "BUILD_WORKING_DIRECTORY" in os.environ:  # `bazel run` starts in the runfiles tree.
    os.chdir(os.environ["BUILD_WORKING_DIRECTORY"])
  for name in required_flags:
    flags.mark_flag_as_required(name)
  app.run(main)
