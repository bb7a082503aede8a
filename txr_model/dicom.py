"""DICOM files (what hospitals store) -> 8-bit grayscale PNG bytes for the model.

The pixels, and every check, are txr_lite.dicom's (TensorFlow-free, shared
with txr-predict-lite); this adds the PNG encoding the serving graph takes.
"""

import tensorflow as tf

from txr_lite import dicom

INSTALL = dicom.INSTALL


def to_png(data: bytes, max_pixels: int) -> bytes:
  """Converts one DICOM file's bytes to an 8-bit grayscale PNG.

  Args:
    data: the file's bytes.
    max_pixels: refuse larger images before decoding their pixels.

  Returns:
    PNG bytes.

  Raises:
    ValueError: saying why the file cannot be used (pydicom missing included).
  """
  return tf.io.encode_png(dicom.to_gray(data, max_pixels)[..., None]).numpy()
