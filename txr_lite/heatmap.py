"""Heat maps on the laptop: a LiteRT network's class activation map as an overlay PNG.

The SavedModel's `explain` signature computes Grad-CAM with a gradient. txr's
head is global average pooling then one dense layer, so Grad-CAM's channel
weights are the dense kernel over the map's area: the class activation map
(the `class_map` output txr-export-lite adds) is the same map up to a positive
factor, computed here without a gradient. Scaled and blended as
txr_model/overlay.py does it. numpy and Pillow only.
"""

import io

import numpy as np

from txr_lite import preprocess


def heatmap(class_map: np.ndarray, size: int) -> np.ndarray:
  """[h, w] class activation map -> [size, size] in [0, 1]: ReLU, bilinear up, max 1 (0 if none)."""
  cam = preprocess.bilinear(np.maximum(np.asarray(class_map, np.float32), 0), size, size)
  return cam / (cam.max() + np.float32(1e-8))


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
  """Blends a jet-coloured heat map over the uint8 [size, size, 1] image the model saw -> RGB."""
  gray = np.asarray(image, np.float32)[..., 0] / 255.0
  h = np.clip(heat, 0.0, 1.0)[..., None]
  jet = np.clip(1.5 - np.abs(4.0 * h - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)
  blended = (1 - alpha) * gray[..., None] + alpha * jet
  return np.round(255 * blended).astype(np.uint8)


def png(rgb: np.ndarray) -> bytes:
  """An RGB uint8 array as PNG bytes."""
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(rgb, "RGB").save(buf, format="PNG")
  return buf.getvalue()
