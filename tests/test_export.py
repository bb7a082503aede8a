"""Writing an export (a kill at any point leaves the previous export, and nothing partial
loads) and its Grad-CAM.

(The signatures themselves are tested on a trained run in test_evaluate_predict.py
and test_train.py; their decoding in test_decode.py.)
"""

import json
from pathlib import Path

import numpy as np
import pytest

from txr_lite import contract
from txr_model import export
from txr_model import model as model_lib

METADATA = contract.SAVED_MODEL_METADATA


def _graph(target):
  """Stands in for ExportArchive.write_out."""
  Path(target).mkdir(parents=True)
  (Path(target) / "saved_model.pb").write_bytes(b"graph")


def test_an_export_is_renamed_into_place_with_its_metadata_last(tmp_path):
  path = tmp_path / "export"
  export.write_atomically(str(path), _graph, '{"threshold": 0.5}')
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.5}
  assert not (tmp_path / "export.partial").exists()
  export.write_atomically(str(path), _graph, '{"threshold": 0.7}')  # A rerun replaces it.
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.7}


@pytest.mark.parametrize("when", ["writing the graph", "before the metadata"])
def test_a_kill_leaves_the_previous_export_and_nothing_loadable(tmp_path, monkeypatch, when):
  path = tmp_path / "export"
  export.write_atomically(str(path), _graph, '{"threshold": 0.5}')

  def killed_in_graph(target):
    _graph(target)
    raise KeyboardInterrupt

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  if when == "before the metadata":  # The graph written, the metadata's folder next.
    monkeypatch.setattr(export.tf.io.gfile, "makedirs", killed)
  with pytest.raises(KeyboardInterrupt):
    export.write_atomically(
      str(path), killed_in_graph if when == "writing the graph" else _graph, '{"threshold": 0.9}'
    )
  monkeypatch.undo()
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.5}
  partial = tmp_path / "export.partial"
  assert (partial / "saved_model.pb").exists() and not (partial / METADATA).exists()


def test_grad_cam_of_a_confident_abnormal_film_is_not_blank():
  """At logit 20 the sigmoid is 1.0 in float32 and its gradient 0: Grad-CAM must use the logit."""
  import tensorflow as tf

  model = model_lib.build_model(75, "none", mode="end_to_end")
  images = tf.constant(np.random.default_rng(0).integers(0, 256, (1, 75, 75, 1)), tf.uint8)
  pooled = model_lib.feature_extractor(model)(images).numpy()[0]
  # The logit is pooled . kernel + bias = 1 + 19: every feature points to TB.
  kernel = pooled[:, None] / np.sum(pooled**2)
  model.get_layer(model_lib.CLASSIFIER).set_weights([kernel, np.array([19.0])])
  heatmap, probability = export.grad_cam(model, model_lib.feature_maps(model), images)
  assert float(probability[0]) == 1.0  # saturated
  assert heatmap.shape == (1, 75, 75)
  assert float(tf.reduce_max(heatmap)) == pytest.approx(1.0, abs=1e-3)


def test_a_kill_between_moving_the_old_export_and_renaming_the_new_loses_neither(
  tmp_path, monkeypatch
):
  import tensorflow as tf

  path = tmp_path / "export"
  export.write_atomically(str(path), _graph, '{"threshold": 0.5}')
  rename = tf.io.gfile.rename

  def killed_before_the_new_one(src, dst, overwrite=False):
    if src.endswith(".partial"):
      raise KeyboardInterrupt
    rename(src, dst, overwrite)

  monkeypatch.setattr(tf.io.gfile, "rename", killed_before_the_new_one)
  with pytest.raises(KeyboardInterrupt):
    export.write_atomically(str(path), _graph, '{"threshold": 0.9}')
  monkeypatch.undo()
  kept = [p for p in (path, tmp_path / "export.old") if (p / METADATA).exists()]
  assert [json.loads((p / METADATA).read_text()) for p in kept] == [{"threshold": 0.5}]
  export.write_atomically(str(path), _graph, '{"threshold": 0.7}')  # The next run finishes it.
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.7}
  assert not (tmp_path / "export.old").exists() and not (tmp_path / "export.partial").exists()


def test_on_an_object_store_the_old_export_stays_until_the_new_one_is_complete(
  tmp_path, monkeypatch
):
  """gs:// cannot rename folders: the export used to be deleted before the new one was written.

  A local folder stands in for the bucket, with folder renames made to fail.
  """
  import tensorflow as tf

  def no_rename(*args, **kwargs):
    raise AssertionError("an object store cannot rename a folder")

  monkeypatch.setattr(export, "renames_folders", lambda path: False)
  monkeypatch.setattr(tf.io.gfile, "rename", no_rename)
  path = tmp_path / "export"

  def graph(content, *extra):
    def write(target):
      (Path(target) / "variables").mkdir(parents=True)
      for name in ("saved_model.pb", "variables/data", *extra):
        (Path(target) / name).write_bytes(content)

    return write

  export.write_atomically(str(path), graph(b"old", "variables/only_old"), '{"threshold": 0.5}')

  def killed_in_graph(target):
    graph(b"new")(target)
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):  # the new export half written: the old one serves
    export.write_atomically(str(path), killed_in_graph, '{"threshold": 0.9}')
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.5}
  assert (path / "saved_model.pb").read_bytes() == b"old"
  copy, copies = tf.io.gfile.copy, []

  def killed_in_copy(src, dst, overwrite=False):
    copies.append(src)
    if len(copies) == 2:
      raise KeyboardInterrupt
    copy(src, dst, overwrite)

  monkeypatch.setattr(tf.io.gfile, "copy", killed_in_copy)
  with pytest.raises(KeyboardInterrupt):  # a mix of old and new files: it must not load
    export.write_atomically(str(path), graph(b"new"), '{"threshold": 0.9}')
  monkeypatch.setattr(tf.io.gfile, "copy", copy)
  assert not (path / METADATA).exists()
  assert (tmp_path / "export.partial" / METADATA).exists()  # the new one, whole
  export.write_atomically(str(path), graph(b"new"), '{"threshold": 0.7}')  # the next run ends it
  assert json.loads((path / METADATA).read_text()) == {"threshold": 0.7}
  assert (path / "variables" / "data").read_bytes() == b"new"
  assert not (path / "variables" / "only_old").exists()
  assert not (tmp_path / "export.partial").exists()
