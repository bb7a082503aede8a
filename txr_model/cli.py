"""What the command-line entry points share. absl only, so txr-predict stays light."""

import math
import os
import sys

from absl import app
from absl import flags


def run(main, required_flags: tuple[str, ...] = ()) -> None:
  """Runs an absl `main` as a console script (txr-train, txr-evaluate, txr-predict).

  A usage error, from the flags (unknown, unparsable, out of range, not
  finite) or from `main`, prints one line naming the command and exits 2,
  instead of absl's whole help text or a traceback.

  Args:
    main: the absl main function.
    required_flags: flags to mark required before parsing.
  """
  if "BUILD_WORKING_DIRECTORY" in os.environ:  # `bazel run` starts in the runfiles tree.
    os.chdir(os.environ["BUILD_WORKING_DIRECTORY"])
  for name in required_flags:
    flags.mark_flag_as_required(name)
  _require_finite_floats()
  command = os.path.basename(sys.argv[0])

  def usage_error(message) -> int:
    print(f"{command}: error: {message}", file=sys.stderr)
    return 2

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.exit(usage_error(str(e).splitlines()[0]))

  def one_line_usage_errors(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      return usage_error(e)

  app.run(one_line_usage_errors, flags_parser=parse_flags)


def _require_finite_floats() -> None:
  """Refuses nan and inf in every float flag: absl's bounds let nan through (nan < 0 is False)."""
  defined = {f.name: f for fs in flags.FLAGS.flags_by_module_dict().values() for f in fs}
  for name, flag in defined.items():
    if isinstance(flag.parser, flags.FloatParser):
      flags.register_validator(
        name, lambda v: v is None or math.isfinite(v), f"--{name} must be a finite number."
      )


def check_folder_flag(name: str, path: str | None) -> None:
  """Raises a UsageError if flag `--name` names something that is not a folder.

  Args:
    name: the flag's name.
    path: its value (local or gs://); a missing folder is fine (it is created).
  """
  from etils import epath  # Lazily: importing this module must stay cheap (no TensorFlow).

  if path and epath.Path(path).exists() and not epath.Path(path).is_dir():
    raise app.UsageError(f"--{name}={path} is a file, not a folder.")


def dataset_builder(dataset: str, data_dir: str):
  """The TFDS builder of `--dataset`, or a one-line UsageError naming it.

  Args:
    dataset: a TFDS name/config, such as 'shenzhen_cxr/512'.
    data_dir: the TFDS data dir.

  Returns:
    The builder (not necessarily prepared).
  """
  import tensorflow_datasets as tfds

  import txr_data  # noqa: F401  (registers the builders)

  check_folder_flag("data_dir", data_dir)
  try:
    return tfds.builder(dataset, data_dir=data_dir)
  except ValueError as e:  # DatasetNotFoundError, or an unknown config
    detail = str(e).split(": BuilderConfig ")[-1].split("\n")[0].split(". Here are")[0]
    raise app.UsageError(
      f"--dataset={dataset}: {detail.rstrip('.')}. Use shenzhen_cxr/512, shenzhen_cxr/original"
      " or another registered TFDS name/config."
    ) from e


def check_built(dataset: str, data_dir: str) -> None:
  """A one-line UsageError, saying how to build it, for a dataset not built in `data_dir`.

  Before any work: a command that went on would have TFDS download the NLM
  archive (an older version in data_dir counts as not built).

  Args:
    dataset: a --dataset value ('a/512' or 'a/512+b/512').
    data_dir: the TFDS data dir.
  """
  from txr_model import input_pipeline  # Lazily: importing this module must stay cheap.

  for name in input_pipeline.dataset_names(dataset):
    if not dataset_builder(name, data_dir).is_prepared():
      builder, _, config = name.partition("/")
      raise app.UsageError(
        f"{name} is not built in {data_dir}: build it with `tfds build txr_data/{builder}"
        f"{f' --config={config}' if config else ''} --data_dir={data_dir}"
        " --manual_dir=<its archive>`, or give --data_dir where it is built."
      )


def check_writable(name: str, path: str) -> None:
  """A one-line UsageError if `path` (a folder, created if missing) cannot be written.

  Writes and removes a probe file, so that a command finds out before minutes
  of work, not at its first write.

  Args:
    name: what the folder is, for the message (e.g. '--model_dir=run/export').
    path: the folder, local or gs://.
  """
  import tensorflow as tf  # Lazily: importing this module must stay cheap.

  probe = os.path.join(path, ".txr_write_probe")
  try:
    tf.io.gfile.makedirs(path)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise app.UsageError(
      f"{name}: cannot write there ({str(e).splitlines()[0] if str(e) else type(e).__name__})."
    ) from None
