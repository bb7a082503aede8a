"""A LiteRT export of a txr model, loaded and run with numpy: no TensorFlow.

A variant is three files side by side in a run's export/ folder:

  model_<variant>.tflite      the network: uint8 gray images -> P(TB), pooled features
  model_<variant>.json        its metadata: image size, max_side, thresholds, labels, run
  model_<variant>.ood.npz     the OOD detector fitted on this variant's own features

The exporter (txr_model/litert.py, with TensorFlow) chooses each variant's
thresholds with this class, so they are the scores txr-predict-lite computes.
"""

import dataclasses
import json
import os

import numpy as np

LABELS = ("normal", "abnormal")
FORMAT = 1  # The metadata's layout; a predictor refuses one it does not know.
VARIANTS = ("float32", "float16", "int8")


def paths(tflite_path: str) -> tuple[str, str]:
  """(metadata JSON, OOD statistics) beside a `model_<variant>.tflite`."""
  stem = tflite_path[: -len(".tflite")] if tflite_path.endswith(".tflite") else tflite_path
  return f"{stem}.json", f"{stem}.ood.npz"


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
  """Distances of feature rows [n, d] to `mean` under `precision` (float64)."""
  d = np.asarray(features, np.float64) - mean
  return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


@dataclasses.dataclass(frozen=True)
class Detector:
  """The out-of-distribution detector of one variant (see txr_model/ood.py)."""

  mean: np.ndarray
  precision: np.ndarray
  threshold: float

  def scores(self, features: np.ndarray) -> np.ndarray:
    """Distance over threshold: above 1 is out of distribution."""
    return mahalanobis(features, self.mean, self.precision) / self.threshold


class LiteModel:
  """A `.tflite` txr network in the LiteRT interpreter (ai-edge-litert)."""

  def __init__(self, model: str | bytes, num_threads: int | None = None):
    """Loads the network.

    Args:
      model: a .tflite file's path or its bytes.
      num_threads: CPU threads for the interpreter; None: every core.
    """
    from ai_edge_litert.interpreter import Interpreter  # Heavy; only the predictor needs it.

    threads = num_threads or os.cpu_count() or 1
    if isinstance(model, bytes):
      self._interpreter = Interpreter(model_content=model, num_threads=threads)
    else:
      self._interpreter = Interpreter(model_path=model, num_threads=threads)
    self._runner = self._interpreter.get_signature_runner()
    ((name, spec),) = self._runner.get_input_details().items()
    self._input, self._dtype = name, spec["dtype"]
    self._scale, self._zero_point = spec["quantization"]
    self.image_size = int(spec["shape"][1])

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(TB) [n] and pooled features [n, d] of uint8 gray images [n, size, size, 1].

    Pixel values are what the Keras model takes (0-255); a quantized input is
    quantized with the parameters calibration gave it.
    """
    x = np.asarray(images, np.float32)
    if self._scale:  # A quantized input (an unquantized uint8 one has scale 0).
      info = np.iinfo(self._dtype)
      x = np.clip(np.round(x / self._scale) + self._zero_point, info.min, info.max)
    probabilities, features = [], []
    for one in x.astype(self._dtype):  # One at a time: the interpreter's fastest path on a CPU.
      out = self._runner(**{self._input: one[None]})
      probabilities.append(out["probability"][0, 0])
      features.append(out["features"][0])
    d = 0 if not features else features[0].shape[-1]
    return np.asarray(probabilities, np.float64), np.asarray(features, np.float32).reshape(-1, d)


def load_metadata(tflite_path: str) -> dict:
  """The metadata JSON beside a .tflite file.

  Raises:
    ValueError: no metadata (an incomplete export) or a format this code does not know.
  """
  meta_path, _ = paths(tflite_path)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except FileNotFoundError:
    raise ValueError(
      f"{meta_path}: missing. A txr LiteRT export is the .tflite with its .json and .ood.npz"
      " beside it; copy all three, or export again with txr-export-lite."
    ) from None
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path}: metadata format {meta.get('format')!r}, expected {FORMAT}.")
  return meta


def load_detector(tflite_path: str, meta: dict) -> Detector:
  """The OOD detector beside a .tflite file, with the threshold its metadata gives."""
  _, ood_path = paths(tflite_path)
  try:
    with np.load(ood_path) as stats:
      mean, precision = stats["mean"], stats["precision"]
  except FileNotFoundError:
    raise ValueError(
      f"{ood_path}: missing. Copy it with the .tflite and .json, or export again."
    ) from None
  return Detector(mean.astype(np.float64), precision.astype(np.float64), meta["ood_threshold"])
