"""The strategy factory's light parts: TF_CONFIG roles and the dtype policy on a CPU."""

import json

import pytest
import tensorflow as tf

from txr_model import strategy


def _tf_config(monkeypatch, cluster, kind, index):
  spec = {"cluster": cluster, "task": {"type": kind, "index": index}}
  monkeypatch.setenv("TF_CONFIG", json.dumps(spec))


def test_without_tf_config_this_process_is_the_chief(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert strategy.task() == ("chief", 0) and strategy.is_chief()


@pytest.mark.parametrize(
  "cluster,kind,index,chief",
  [
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
  ],
)
def test_worker_0_is_the_chief_only_without_a_chief_task(monkeypatch, cluster, kind, index, chief):
  _tf_config(monkeypatch, cluster, kind, index)
  assert strategy.task() == (kind, index)
  assert strategy.is_chief() is chief


def test_default_strategy_and_policy_on_a_cpu():
  default = strategy.get_strategy("default")
  assert default.num_replicas_in_sync == 1
  assert strategy.compute_dtype_policy("auto", default) == "float32"
  assert strategy.compute_dtype_policy("mixed_bfloat16", default) == "mixed_bfloat16"
  with pytest.raises(ValueError, match="--strategy='warp'"):
    strategy.get_strategy("warp")
  if not tf.config.list_physical_devices("GPU"):
    with pytest.raises(ValueError, match="found no GPU"):
      strategy.get_strategy("one_device")
