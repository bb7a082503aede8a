"""A LiteRT export of a txr model, loaded and run with numpy: no TensorFlow.

A variant is three files side by side in a run's export/ folder
(`contract.LiteFiles`): the network (uint8 gray images -> P(TB), pooled
features), its metadata (`contract.Metadata`) and the OOD detector fitted on
its own features. The exporter (txr_model/litert.py, with TensorFlow) chooses
each variant's thresholds with `LiteModel`, so they are the scores
txr-predict-lite computes.
"""

import dataclasses
import io
import os

import numpy as np

from txr_lite import contract


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
    """Distance over threshold: above contract.OOD_SCORE_LIMIT is out of distribution."""
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

  @property
  def has_class_map(self) -> bool:
    """Whether the network has the 'class_map' output heat maps are drawn from."""
    return "class_map" in self._runner.get_output_details()

  def predict(self, images: np.ndarray, class_maps: bool = False):
    """P(TB) [n] and pooled features [n, d] of uint8 gray images [n, size, size, 1].

    Pixel values are what the Keras model takes (0-255); a quantized input is
    quantized with the parameters calibration gave it.

    Args:
      images: the images.
      class_maps: also return the class activation maps [n, h, w] (`heatmap.py`).
    """
    x = np.asarray(images, np.float32)
    if self._scale:  # A quantized input (an unquantized uint8 one has scale 0).
      info = np.iinfo(self._dtype)
      x = np.clip(np.round(x / self._scale) + self._zero_point, info.min, info.max)
    probabilities, features, maps = [], [], []
    for one in x.astype(self._dtype):  # One at a time: the interpreter's fastest path on a CPU.
      out = self._runner(**{self._input: one[None]})
      probabilities.append(out["probability"][0, 0])
      features.append(out["features"][0])
      if class_maps:
        maps.append(np.asarray(out["class_map"][0, ..., 0], np.float32))
    d = 0 if not features else features[0].shape[-1]
    result = np.asarray(probabilities, np.float64), np.asarray(features, np.float32).reshape(-1, d)
    return (*result, maps) if class_maps else result


def detector_bytes(detector: dict) -> bytes:
  """The .ood.npz file's bytes of a fitted detector (its mean and precision)."""
  buf = io.BytesIO()
  np.savez(buf, **{k: np.asarray(detector[k], np.float32) for k in ("mean", "precision")})
  return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class Variant:
  """One LiteRT variant, loaded and checked: its metadata, detector and network."""

  meta: contract.Metadata
  detector: Detector
  model: LiteModel


def load(tflite_path: str, num_threads: int | None = None) -> Variant:
  """Reads a variant's three files once, checks they belong together, and loads the network.

  Args:
    tflite_path: a `model_<variant>.tflite` with its .json and .ood.npz beside it.
    num_threads: the interpreter's CPU threads; None: every core.

  Raises:
    contract.MetadataError: a missing, damaged or mismatched file, in one line.
  """
  files = contract.files_of(tflite_path)
  data = {}
  for name in ("metadata", "tflite", "ood"):
    path = getattr(files, name)
    try:
      with open(path, "rb") as f:
        data[name] = f.read()
    except FileNotFoundError:
      raise contract.MetadataError(
        f"{path}: missing. A txr LiteRT export is the .tflite with its .json and .ood.npz beside"
        " it; copy all three, or export again with txr-export-lite."
      ) from None
  meta = contract.Metadata.from_json(data["metadata"], files.metadata)
  if meta.variant == contract.SAVED_MODEL:
    raise contract.MetadataError(f"{files.metadata}: a SavedModel's metadata; use txr-predict.")
  meta.check_files(files, data["tflite"], data["ood"])
  with np.load(io.BytesIO(data["ood"])) as stats:
    detector = Detector(
      stats["mean"].astype(np.float64), stats["precision"].astype(np.float64), meta.ood_threshold
    )
  model = LiteModel(data["tflite"], num_threads)
  if model.image_size != meta.image_size:
    raise contract.MetadataError(
      f"{files.metadata}: image_size {meta.image_size}, but {files.tflite} takes"
      f" {model.image_size} px; export again with txr-export-lite."
    )
  return Variant(meta, detector, model)
