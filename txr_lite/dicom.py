"""DICOM files (what hospitals store) -> 8-bit grayscale pixels, without TensorFlow.

Needs pydicom (`INSTALL` says how). Applies the modality LUT (rescale
slope/intercept) and the VOI LUT or window the file carries, scales by the
stored bit depth (or a VOI LUT's own depth), as 12-bit PNGs are scaled, and
inverts MONOCHROME1 (where high values are dark). Bad attributes are a
ValueError naming them, never another type that would stop a batch.
txr_model.dicom encodes these pixels as a PNG for the serving graph;
txr-predict-lite feeds them to txr_lite.preprocess.prepare_array.
"""

import io

import numpy as np

from txr_lite import image_rules

_BAND_ROWS = 256  # rows converted at a time

# Not 'txr[dicom]': the package index's "txr" is another project. txr installs from its
# checkout, so name pydicom itself.
INSTALL = (
  "reading DICOM needs pydicom: pip install 'pydicom>=3' (from a txr checkout:"
  " pip install '.[dicom]', or './lite[dicom]' for txr-predict-lite's environment)"
)


def to_gray(data: bytes, max_pixels: int = image_rules.MAX_PIXELS) -> np.ndarray:
  """Converts one DICOM file's bytes to uint8 grayscale pixels [rows, columns].

  Args:
    data: the file's bytes.
    max_pixels: refuse larger images before decoding their pixels.

  Returns:
    uint8 [rows, columns].

  Raises:
    ValueError: saying why the file cannot be used (pydicom missing included).
  """
  try:
    import pydicom
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels import apply_voi_lut
  except ImportError:
    raise ValueError(INSTALL) from None
  try:
    ds = pydicom.dcmread(io.BytesIO(data))
  except Exception as e:  # pydicom raises many types for a bad file.
    raise ValueError(f"not a readable DICOM file ({e})") from None
  if "PixelData" not in ds:
    raise ValueError("DICOM file without pixel data")
  rows, columns = _integer(ds, "Rows"), _integer(ds, "Columns")
  if rows * columns > max_pixels:
    raise ValueError(f"{columns} x {rows} pixels is too large for a radiograph")
  if _integer(ds, "SamplesPerPixel") != 1 or _integer(ds, "NumberOfFrames", 1) != 1:
    raise ValueError("only single-frame grayscale DICOM radiographs are supported")
  inverted = ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"
  try:
    pixels = ds.pixel_array
  except Exception as e:  # Compressed data without its decoder, truncated data.
    raise ValueError(f"cannot decode the DICOM pixel data ({e})") from None
  # A band of rows at a time: pydicom's LUTs return float64, 8 bytes a pixel.
  gray = np.empty(pixels.shape, np.uint8)
  bands = [slice(top, top + _BAND_ROWS) for top in range(0, len(pixels), _BAND_ROWS)]
  smallest, largest = np.inf, -np.inf

  def values_of(band):  # A float64 copy always: never scale pydicom's array.
    return np.array(apply_voi_lut(apply_modality_lut(pixels[band], ds), ds), np.float64)

  try:  # The attributes are as the file says: 'abc' as a slope, a LUT without its descriptor.
    low, high = _output_range(ds, pixels)
    for band in bands:
      values = values_of(band)
      if not np.isfinite(values).all():
        raise ValueError("they give values that are not finite numbers")
      smallest, largest = min(smallest, values.min()), max(largest, values.max())
      if low <= smallest and largest <= high:
        gray[band] = _scaled(values, low, high, inverted)
  except Exception as e:  # pydicom and numpy raise many types for bad attributes.
    raise ValueError(f"invalid DICOM rescale, window or LUT attributes ({e})") from None
  if smallest < low or largest > high:  # A rescale that leaves the nominal range is mapped
    for band in bands:  # by its own extremes.
      gray[band] = _scaled(values_of(band), smallest, largest, inverted)
  return gray


def _scaled(values: np.ndarray, low: float, high: float, inverted: bool) -> np.ndarray:
  """float64 values in [low, high] -> 0 to 255, rounded (in place)."""
  if high > low:
    values -= low
    values /= high - low
  else:
    values[...] = 0.0
  if inverted:
    np.subtract(1.0, values, out=values)
  values *= 255
  return np.round(values, out=values)


def _integer(ds, keyword: str, default: int | None = None) -> int:
  """A tag's one whole number: every integer tag is read through here.

  Args:
    ds: the pydicom dataset.
    keyword: the tag's keyword, e.g. 'Rows'.
    default: the value where the file lacks the tag or leaves it empty; None
      makes that an error.

  Raises:
    ValueError: naming the tag, when it is missing (without a default), empty
      (without a default), several values, or not a whole number.
  """
  value = ds.get(keyword)
  if value is None or value == "":
    if default is None:
      raise ValueError(f"the DICOM tag {keyword} is missing or empty")
    return default
  if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
    raise ValueError(f"the DICOM tag {keyword} holds {len(value)} values, not one")
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"the DICOM tag {keyword} is not a whole number ({value!r})") from None


def _output_range(ds, pixels: np.ndarray) -> tuple[float, float]:
  """The nominal range of what `apply_voi_lut` returns, to scale to 8 bits.

  A VOI LUT's entries have the LUT's own depth (its descriptor's third value);
  otherwise the stored bit depth sets it, as 12-bit PNGs are scaled (and as a
  VOI window's output spans), so a dim image stays dim.
  """
  if ds.get("VOILUTSequence"):  # apply_voi_lut prefers the LUT to a window.
    return 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
  bits = _integer(ds, "BitsStored", 8 * pixels.dtype.itemsize)
  low = -(2.0 ** (bits - 1)) if _integer(ds, "PixelRepresentation", 0) else 0.0
  return low, low + 2.0**bits - 1
