"""litert.py: a threshold that labels nothing is named, and refused at export unless allowed."""

import numpy as np
import pytest

from txr_model import litert

LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_a_threshold_that_labels_nothing_is_named():
  good = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
  assert litert.degenerate(LABELS, good, 0.5) is None
  assert "below chance" in litert.degenerate(LABELS, good[::-1], 0.5)  # AUC 0
  assert "every validation film abnormal" in litert.degenerate(LABELS, good, 0.0)
  assert "every validation film abnormal" in litert.degenerate(LABELS, good, 0.1)
  assert "every validation film normal" in litert.degenerate(LABELS, good, 0.95)


@pytest.mark.heavy
def test_export_lite_refuses_a_threshold_that_labels_nothing_unless_allowed(
  built_data_dir, tmp_path
):
  """A model that scores every film alike: its triage threshold reads them all abnormal.

  Before, such a variant was written with a threshold of 0.0000 and not a word.
  """
  from conftest import train_flag_values
  import keras

  from txr_model import model as model_lib
  from txr_model import run_config
  from txr_model import run_dir

  model_dir = tmp_path / "run"
  model_dir.mkdir()
  values = train_flag_values()
  values(["txr-train", f"--data_dir={built_data_dir}", f"--model_dir={model_dir}",
          "--backbone=mobilenet_v3_small", "--image_size=32"])  # fmt: skip
  run_config.RunConfig.from_flags(values).save(str(model_dir))
  # A few layers with txr's inputs, outputs and layer names (converts in a second, where
  # a backbone takes ten): P(TB) 0.993 for every film.
  image = keras.Input((32, 32, 1), dtype="uint8", name="image")
  x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
  x = keras.layers.Conv2D(4, 3, activation="relu")(x)
  pooled = keras.layers.GlobalAveragePooling2D(name=model_lib.POOL)(x)
  head = keras.layers.Dense(1, activation="sigmoid", name=model_lib.CLASSIFIER)
  model = keras.Model(image, head(pooled))
  head.set_weights([np.zeros(head.kernel.shape), np.full(1, 5.0)])
  model.save(model_dir / run_dir.MODEL)
  tflite = model_dir / run_dir.EXPORT / "model_float32.tflite"
  with pytest.raises(ValueError, match="float32 model was not written: .*every validation film"):
    litert.export_lite(str(model_dir), ["float32"])
  assert not tflite.exists()
  written = litert.export_lite(str(model_dir), ["float32"], allow_degenerate=True)
  assert written["float32"][1] == str(tflite) and tflite.exists()
