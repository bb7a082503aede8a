"""Turns --strategy into a tf.distribute.Strategy, failing loudly when asked-for hardware is absent.

Cluster handling (TF_CONFIG: this task, whether it is the chief) lives here
too, beside the strategy factory, as in the Model Garden's distribute_utils.

The strategy must be created before any dataset (TPUs need it) and logical CPU
devices before any TF op, so `configure_cpu_devices` runs first in `main`.
"""

import json
import os

from absl import logging
import tensorflow as tf

from txr_model import choices


def task() -> tuple[str, int]:
  """Returns (type, index) of this process in TF_CONFIG; ('chief', 0) without one."""
  task_spec = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
  return task_spec.get("type", "chief"), int(task_spec.get("index", 0))


def is_chief() -> bool:
  """Whether this process writes the run's outputs: the chief, or worker 0 without one."""
  kind, index = task()
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def configure_cpu_devices(count: int) -> None:
  """Splits the CPU into `count` logical devices, to run `mirrored` without GPUs."""
  if count <= 1:
    return
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def _gpus(num_gpus: int) -> list[str]:
  visible = tf.config.list_logical_devices("GPU")
  if num_gpus > len(visible):
    raise ValueError(f"--num_gpus={num_gpus} but {len(visible)} GPU(s) are visible.")
  return [d.name for d in visible[: num_gpus if num_gpus >= 0 else None]]


def get_strategy(name: str, tpu: str = "", num_gpus: int = -1) -> tf.distribute.Strategy:
  """Returns the strategy `name`, one of choices.STRATEGIES.

  Args:
    name: `default` (TF's default: one device, no distribution), `one_device`
      (the first GPU, or the CPU if `num_gpus` is 0), `mirrored` (all visible
      GPUs, or the logical CPU devices), `multi_worker_mirrored` (workers from
      TF_CONFIG) or `tpu`.
    tpu: TPU name or address for `tpu`; empty means 'local' (a TPU VM).
    num_gpus: GPUs to use; -1 for all visible.
  """
  if name not in choices.STRATEGIES:
    raise ValueError(f"--strategy={name!r}: expected one of {', '.join(choices.STRATEGIES)}.")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = _gpus(num_gpus)
    if num_gpus != 0 and not gpus:
      raise ValueError("--strategy=one_device found no GPU. Use --num_gpus=0 to run on the CPU.")
    return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
  if name == "mirrored":
    devices = _gpus(num_gpus)
    if not devices:
      cpus = tf.config.list_logical_devices("CPU")
      if len(cpus) < 2:
        raise ValueError(
          "--strategy=mirrored found no GPU. Use --strategy=default on a CPU, or"
          " --num_cpu_devices=N to mirror over logical CPU devices."
        )
      devices = [d.name for d in cpus]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return _tpu_strategy(tpu or "local")


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(
      f"--strategy=tpu: no TPU found at --tpu={tpu!r} ({reason}). Pass the TPU name"
      " (Cloud TPU node) or leave --tpu empty on a TPU VM."
    ) from e
  logging.info("TPU devices: %s", tf.config.list_logical_devices("TPU"))
  return tf.distribute.TPUStrategy(resolver)


def compute_dtype_policy(policy: str, strategy: tf.distribute.Strategy) -> str:
  """Resolves --mixed_precision=auto: bfloat16 on TPU, float16 on GPU, float32 on CPU."""
  if policy != "auto":
    return policy
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "mixed_bfloat16"
  try:
    devices = strategy.extended.worker_devices
  except RuntimeError:  # The default strategy: TF places ops on the first GPU, if any.
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
  return "mixed_float16" if any("GPU" in d.upper() for d in devices) else "float32"
