"""Encoded image bytes -> the model's input with numpy and Pillow: the serving graph's steps.

What txr_model/decode.py does to one element of a serving batch, without
TensorFlow, for txr-predict-lite: the same refusals (a ValueError carrying the
graph's message, in the graph's precedence), read from the header before any
pixel is decoded; then the same pixels within one grey level
(tests/test_lite_preprocess.py compares them): gray decoded directly, colour
reduced as `tf.image.rgb_to_grayscale` does (equal channels kept exact), 16-bit
data scaled by its real depth (txr_data.image_codec.to_uint8), the EXIF
orientation found by walking the file as the graph walks it, TensorFlow's area
shrink to `max_side` and its bilinear pad-resize (txr_data/geometry.py).

JPEGs decode with libjpeg's accurate integer DCT, as the serving graph's
decode_jpeg is told to: Pillow offers no other.
"""

import dataclasses
import io
import struct
import zlib

import numpy as np
from PIL import JpegImagePlugin
from PIL import PngImagePlugin

from txr_lite import image_rules

ERRORS = image_rules.ERRORS
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's weights
_BAND_ROWS = 256  # pixels copied out of Pillow this many rows at a time
# Pillow reads 16-bit colour PNGs to 8 bits (the high bytes). Read twice, with
# these raw modes (by PNG colour type: RGB, RGBA), the same unfiltered rows give
# the high and the low bytes.
_SIXTEEN_BIT = {2: ("RGB;16B", "RGB;16L"), 6: ("RGBA;16B", "RGBA;16L")}


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One image as the model takes it, with the inputs of the cheap out-of-distribution checks."""

  image: np.ndarray  # uint8 [image_size, image_size, 1]
  colourfulness: float  # Hasler-Suesstrunk, 0 for a gray file
  aspect: float  # width / height, upright, before the shrink
  polarity: float  # middle minus the brighter lung, grey levels (image_rules.polarity_strips)
  smoothness: float  # correlation of horizontal neighbours (image_rules.smoothness_span)


def prepare(data: bytes, image_size: int, max_side: int | None) -> Prepared:
  """Decodes one encoded PNG or JPEG as the serving graph does (`decode.decode_batch`).

  Args:
    data: the file's bytes.
    image_size: the model's input size.
    max_side: the training dataset's stored longest side, or None.

  Returns:
    The model input and the out-of-distribution inputs.

  Raises:
    ValueError: with the serving graph's message (`image_rules.ERRORS`) for a
      refused image.
  """
  if not data:
    raise ValueError(ERRORS["empty"])
  head = data[:32].ljust(32, b"\0")
  is_png = head.startswith(image_rules.PNG_SIGNATURE) and head[12:16] == b"IHDR"
  jpeg = None
  if is_png:
    width, height = struct.unpack(">II", head[16:24])
    colour = bool(head[25] & 2)  # RGB, RGBA and palette types
    scans = 0
  elif head.startswith(image_rules.JPEG_SIGNATURE):
    try:  # The plugin's class, not Image.open: our pixel limit, not Pillow's global one.
      jpeg = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    except Exception:  # Pillow raises many types for a bad header.
      raise ValueError(ERRORS["decode"]) from None
    (width, height), colour = jpeg.size, len(jpeg.getbands()) >= 3
    scans = data.count(b"\xff\xda")  # Each scan starts with SOS; entropy data stuffs 0xFF.
  else:
    raise ValueError(ERRORS["format"])
  _check_size(width, height, scans)

  try:
    if is_png:
      gray, rgb = _png_pixels(data, colour, _significant_bits(data))
    else:
      gray, rgb = _jpeg_pixels(jpeg, colour)
  except Exception:  # Pillow raises many types for truncated or corrupt data.
    raise ValueError(ERRORS["decode"]) from None
  colourfulness = 0.0 if rgb is None else colourfulness_of(rgb[::4, ::4])
  orientation = image_rules.exif_orientation(data, is_png)
  return _finish(gray, orientation, colourfulness, image_size, max_side)


def prepare_array(gray: np.ndarray, image_size: int, max_side: int | None) -> Prepared:
  """`prepare` for an upright uint8 gray image already decoded (a DICOM's, txr_lite.dicom).

  The pixels the serving graph gets from the same image encoded as a PNG
  (which is lossless), and the same refusals.

  Args:
    gray: uint8 [h, w] or [h, w, 1].
    image_size: the model's input size.
    max_side: the training dataset's stored longest side, or None.

  Raises:
    ValueError: with the serving graph's message for a refused image.
    TypeError: for an array that is not uint8 (a cast would hide a scaling bug).
  """
  if gray.dtype != np.uint8:
    raise TypeError(f"a uint8 gray image is needed, not {gray.dtype}")
  gray = gray.reshape(gray.shape[:2])
  _check_size(gray.shape[1], gray.shape[0], 0)
  return _finish(gray, 1, 0.0, image_size, max_side)


def _check_size(width: int, height: int, scans: int) -> None:
  """The graph's refusals from the header, highest precedence first."""
  short, long = min(width, height), max(width, height)
  for refused, kind in (
    (width * height <= 0, "no_pixels"),
    (width * height > image_rules.MAX_PIXELS, "too_large"),
    (long > image_rules.MAX_ASPECT * short, "aspect"),
    (short < image_rules.MIN_SIDE, "too_small"),
    (scans > image_rules.MAX_JPEG_SCANS, "scans"),
  ):
    if refused:
      raise ValueError(ERRORS[kind])


def _finish(gray, orientation, colourfulness, image_size, max_side) -> Prepared:
  """Orients, shrinks, checks the contrast of and squares a uint8 [h, w] image."""
  gray = orient(gray, orientation)
  aspect = float(np.float32(gray.shape[1]) / np.float32(gray.shape[0]))
  if max_side:
    gray = shrink(gray, max_side)
  if gray.std(dtype=np.float64) < image_rules.MIN_CONTRAST:
    raise ValueError(ERRORS["blank"])
  square = resize_to_square(gray, image_size)
  return Prepared(
    square[..., None], colourfulness, aspect, polarity_of(square), smoothness_of(square)
  )


def _critical_chunks(data: bytes) -> bytes:
  """The PNG's critical chunks (IHDR, PLTE, IEND, its image data in one stored IDAT), checked.

  libpng, the serving graph's decoder, refuses a critical chunk with a wrong
  CRC, an unknown critical chunk, a palette image without PLTE before its
  image data, a file cut before IEND and image data short of the header's
  rows (`_inflate`), and ignores an ancillary chunk's CRC,
  which Pillow checks (the graph reads eXIf and sBIT itself, from the whole
  file). No ancillary chunk changes the pixels either decodes, so Pillow gets
  only the critical ones; and the image data, inflated once for the check,
  reaches it stored (zlib level 0), so it is not inflated twice.
  """
  view, pos, kept = memoryview(data), len(image_rules.PNG_SIGNATURE), [data[:8]]
  idat, palette = [], False
  while True:
    if pos + 12 > len(data):
      raise ValueError(ERRORS["decode"])
    length, kind = struct.unpack_from(">I4s", data, pos)
    end = pos + 12 + length
    if end > len(data):
      raise ValueError(ERRORS["decode"])
    if not kind[0] & 0x20:  # Bit 5 of the first letter clear: critical.
      (crc,) = struct.unpack_from(">I", data, end - 4)
      if (
        kind not in (b"IHDR", b"PLTE", b"IDAT", b"IEND")
        or zlib.crc32(view[pos + 4 : end - 4]) != crc
      ):
        raise ValueError(ERRORS["decode"])
    if kind == b"IDAT":
      if data[25] == 3 and not palette:
        raise ValueError(ERRORS["decode"])
      idat.append(view[pos + 8 : end - 4])
    elif kind == b"IEND":
      stored = _stored_zlib(_inflate(data, idat))
      kept.append(struct.pack(">I", len(stored)) + b"IDAT")
      kept += [stored, struct.pack(">I", zlib.crc32(stored, zlib.crc32(b"IDAT")))]
      kept.append(view[pos:end])
      return b"".join(kept)
    elif not kind[0] & 0x20:
      kept.append(view[pos:end])
      palette = palette or kind == b"PLTE"
    pos = end


def _stored_zlib(raw: bytes) -> bytes:
  """`raw` as a zlib stream of stored deflate blocks (RFC 1950/1951), as zlib level 0 writes it."""
  view, block = memoryview(raw), 65535
  parts = [b"\x78\x01"]
  for at in range(0, max(len(raw), 1), block):
    piece = view[at : at + block]
    final = at + block >= len(raw)
    parts += [struct.pack("<BHH", final, len(piece), 0xFFFF ^ len(piece)), piece]
  parts.append(struct.pack(">I", zlib.adler32(raw)))
  return b"".join(parts)


def _inflate(data: bytes, idat: list) -> bytes:
  """The PNG's filtered rows; refuses image data that inflates to fewer (or more) rows.

  libpng, the serving graph's decoder, refuses such a file; Pillow fills the
  missing rows in, which scored a half film as a whole one.
  """
  width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
  expected = image_rules.png_image_data_bytes(width, height, depth, colour, interlace)
  try:
    rows, ended = image_rules.inflate(idat, expected)
  except zlib.error:
    raise ValueError(ERRORS["decode"]) from None
  if len(rows) != expected or not ended:
    raise ValueError(ERRORS["decode"])
  return rows


def _png_pixels(data: bytes, colour: bool, significant_bits: int):
  """Gray uint8 [h, w] and, for a colour file, its RGB uint8 [h, w, 3] (decode.py's `_gray`).

  Each copy is let go once the next holds the pixels (the checked PNG once Pillow
  has decoded it, Pillow's image once numpy has its bytes): a 16-bit gray film
  peaked at about 8 bytes a pixel over the file, holding four copies at once.
  """
  checked = _critical_chunks(data)
  if data[24] == 16 and (colour or data[25] == 4):
    # Pillow reads 16-bit colour and gray + alpha only as 8-bit images: the high and the
    # low bytes go into the uint16 values a band at a time, from one image at a time.
    if colour:
      high, low = _SIXTEEN_BIT[data[25]]
      values = _high_bytes(_decoded(checked, high), 3)
      for top, bottom, band in _bands(_decoded(checked, low)):
        values[top:bottom] |= band[..., :3]
    else:  # Gray + alpha, which Pillow reads as RGBA: the raw bytes, gray high then low.
      image = _decoded(checked, "RGBA")
      values = _high_bytes(image, 1)
      for top, bottom, band in _bands(image):
        values[top:bottom, :, 0] |= band[..., 1]
      del image
    del checked
    pixels = to_uint8(values, significant_bits)
  else:
    image = _decoded(checked)
    del checked
    if data[24] == 16:
      values = _array(image)[..., None]
      del image
      pixels = to_uint8(values, significant_bits)
    elif colour:  # Palette expanded, alpha dropped; an RGB image is not copied to convert it.
      pixels = _array(image if image.mode == "RGB" else image.convert("RGB"))
    else:
      # 1-4 bit gray scaled, alpha dropped; 8-bit gray read as it is.
      pixels = _array(image if image.mode == "L" else image.convert("L"))[..., None]
  if not colour:
    return pixels[..., 0], None
  return _rgb_gray(pixels), pixels


def _decoded(png: bytes, rawmode: str | None = None):
  """The PNG decoded by Pillow (unpacked with `rawmode` instead of the mode it picks).

  Pillow keeps its file open after decoding: closing it here lets go of `png`.
  """
  with io.BytesIO(png) as file:
    image = PngImagePlugin.PngImageFile(file)
    if rawmode:
      image.tile = [tile._replace(args=rawmode) for tile in image.tile]
    image.load()
  return image


def _bands(image):
  """(top, bottom, pixels) of a Pillow image's rows, a band at a time, copied into numpy.

  `np.asarray(image)` goes through `Image.tobytes`, which holds the pieces it
  encodes and their join at once: with the image, three copies of the pixels.
  """
  for top in range(0, image.height, _BAND_ROWS):
    bottom = min(top + _BAND_ROWS, image.height)
    yield top, bottom, np.asarray(image.crop((0, top, image.width, bottom)))


def _array(image) -> np.ndarray:
  """A Pillow image's pixels in numpy, copied a band of rows at a time (`_bands`)."""
  out = None
  for top, bottom, band in _bands(image):
    if out is None:  # Pillow's dtype and channels, from the first band.
      out = np.empty((image.height, *band.shape[1:]), band.dtype)
    out[top:bottom] = band
  return out


def _high_bytes(image, channels: int) -> np.ndarray:
  """uint16 [h, w, channels]: the first `channels` of an 8-bit Pillow image, shifted left 8."""
  values = np.empty((image.height, image.width, channels), np.uint16)
  for top, bottom, band in _bands(image):
    values[top:bottom] = band[..., :channels]
    values[top:bottom] <<= 8
  return values


def _jpeg_pixels(image, colour: bool) -> tuple[np.ndarray, np.ndarray | None]:
  """Gray uint8 [h, w] and, for a colour file, its RGB uint8 [h, w, 3]."""
  if not colour:  # Not converted when it is gray already: convert copies.
    return _array(image if image.mode == "L" else image.convert("L")), None
  rgb = _array(image if image.mode == "RGB" else image.convert("RGB"))
  return _rgb_gray(rgb), rgb


def _rgb_gray(rgb: np.ndarray) -> np.ndarray:
  """uint8 [h, w, 3] -> [h, w]: equal channels kept exact (radiographs saved as RGB), else luma.

  Luma as `tf.image.rgb_to_grayscale` computes it: in float32 on [0, 1],
  scaled back by 255.5 and truncated.
  """
  red = rgb[..., 0]
  if np.array_equal(red, rgb[..., 1]) and np.array_equal(red, rgb[..., 2]):
    return red.copy()
  gray = np.empty(rgb.shape[:2], np.uint8)
  for top in range(0, len(rgb), 256):  # In bands: float32 over the whole image is 16 B/pixel.
    luma = (rgb[top : top + 256].astype(np.float32) * np.float32(1 / 255)) @ _LUMA
    gray[top : top + 256] = luma * np.float32(255.5)
  return gray


def to_uint8(values: np.ndarray, significant_bits: int = 0) -> np.ndarray:
  """uint16 -> uint8 scaled by the real bit depth: txr_data.image_codec.to_uint8's arithmetic.

  The depth is the larger of sBIT's and the bits the data's maximum needs.
  Applied through a 65536-entry table: one float32 product per value, as TF's.
  """
  data_bits = int(values.max()).bit_length() if values.size else 0
  bits = min(max(significant_bits, data_bits, 8), 16)
  scale = np.float32(255.0) / (np.float32(2.0) ** np.float32(bits) - np.float32(1.0))
  table = np.round(np.arange(65536, dtype=np.float32) * scale)
  return np.clip(table, 0, 255).astype(np.uint8)[values]


def polarity_of(square: np.ndarray) -> float:
  """A square uint8 image's middle strip minus its brighter lung strip (ood.polarity's twin)."""
  (top, bottom), (middle, *lungs) = image_rules.polarity_strips(square.shape[0])
  rows = square[top:bottom].astype(np.float32)
  brightest = max(rows[:, a:b].mean(dtype=np.float32) for a, b in lungs)
  return float(rows[:, middle[0] : middle[1]].mean(dtype=np.float32) - brightest)


def smoothness_of(square: np.ndarray) -> float:
  """A square uint8 image's neighbour correlation in its middle (txr_model.ood.smoothness)."""
  first, end = image_rules.smoothness_span(square.shape[0])
  middle = square[first:end, first:end].astype(np.float32)
  left, right = middle[:, :-1].ravel(), middle[:, 1:].ravel()
  left, right = left - left.mean(dtype=np.float32), right - right.mean(dtype=np.float32)
  spread = np.sqrt((left * left).sum(dtype=np.float32) * (right * right).sum(dtype=np.float32))
  return float((left * right).sum(dtype=np.float32) / spread) if spread > 0 else 1.0


def colourfulness_of(rgb: np.ndarray) -> float:
  """Hasler-Suesstrunk colourfulness of a [h, w, 3] 0-255 image (txr_model.ood.colourfulness)."""
  r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
  rg, yb = r - g, 0.5 * (r + g) - b
  std = np.sqrt(rg.var() + yb.var())
  return float(std + 0.3 * np.hypot(rg.mean(), yb.mean()))


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation (1-8) to an [h, w] image, as geometry.orient does."""
  return {
    2: lambda x: x[:, ::-1],
    3: lambda x: np.rot90(x, 2),
    4: lambda x: x[::-1],
    5: lambda x: x.T,
    6: lambda x: np.rot90(x, 3),
    7: lambda x: np.rot90(x.T, 2),
    8: lambda x: np.rot90(x, 1),
  }.get(orientation, lambda x: x)(image)


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
  """Area-resizes uint8 [h, w] so its longest side is at most `max_side` (geometry.shrink).

  A band of output rows at a time: the float64 sums of the whole image's rows
  took about 2 bytes a pixel more than the image.
  """
  scale = max_side / max(image.shape)
  if scale >= 1.0:
    return image
  height, width = (max(int(np.round(side * scale)), 1) for side in image.shape)
  out = np.empty((height, width), np.uint8)
  for top in range(0, height, _BAND_ROWS):
    rows = _area(image, height, 0, top, min(top + _BAND_ROWS, height))
    out[top : top + len(rows)] = np.clip(np.round(_area(rows, width, 1)), 0, 255)
  return out


def _area(
  image: np.ndarray, size: int, axis: int, first: int = 0, stop: int | None = None
) -> np.ndarray:
  """TensorFlow's area shrink along one axis: each output averages the inputs it covers.

  Output i integrates the piecewise-constant input over [i, i + 1) * scale:
  the whole inputs inside (summed in integers for 8-bit data, else float64:
  exact either way), plus the covered parts of the inputs at both ends.
  Outputs `first` to `stop` only (all by default), each computed as in the whole.
  """
  n = image.shape[axis]
  stop = size if stop is None else stop
  scale = float(np.float32(n) / np.float32(size))  # TF's resize scale is a float32.
  edges = np.minimum(np.arange(first, stop + 1) * scale, n)
  whole = np.floor(edges).astype(np.int64)  # Strictly increasing: scale > 1.
  exact = np.uint32 if image.dtype == np.uint8 else np.float64  # 3000 x 255 fits in 32 bits.
  if axis == 0:  # A sum of whole rows each: numpy's reduceat over rows is 8x slower.
    inside = np.stack(
      [image[a:b].sum(axis=0, dtype=exact) for a, b in zip(whole[:-1], whole[1:], strict=True)]
    )
  else:
    inside = np.add.reduceat(image[:, : whole[-1]], whole[:-1], axis=1, dtype=exact)
  shape = [1] * image.ndim
  shape[axis] = -1
  ends = (edges - whole).reshape(shape) * np.take(image, np.minimum(whole, n - 1), axis=axis)
  return (inside + np.diff(ends, axis=axis)) / scale


def resize_to_square(image: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 [h, w] -> [size, size], aspect kept and zero padded (geometry.resize_to_square).

  The sizes and offsets in float32 as the graph computes them; the resize is
  TensorFlow's bilinear one (half-pixel centres, no antialiasing).
  """
  height, width = np.float32(image.shape[0]), np.float32(image.shape[1])
  size = np.float32(image_size)
  ratio = max(width / size, height / size)
  resized_height, resized_width = height / ratio, width / ratio
  resized = bilinear(image, int(np.floor(resized_height)), int(np.floor(resized_width)))
  resized = np.clip(np.round(resized), 0, 255).astype(np.uint8)
  top = max(0, int((size - resized_height) / np.float32(2)))
  left = max(0, int((size - resized_width) / np.float32(2)))
  out = np.zeros((image_size, image_size), np.uint8)
  out[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
  return out


def bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """`tf.image.resize(image, [height, width])` of [h, w]: float32, TF's interpolation order."""

  def weights(n_in, n_out):
    scale = np.float32(n_in) / np.float32(n_out)
    at = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(at)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(at), n_in - 1).astype(np.int64)
    return lower, upper, (at - floor).astype(np.float32)

  y0, y1, dy = weights(image.shape[0], height)
  x0, x1, dx = weights(image.shape[1], width)
  rows = np.unique(np.concatenate([y0, y1]))  # Only the rows the output reads.
  picked = np.zeros(image.shape[0], np.int64)
  picked[rows] = np.arange(len(rows))
  source = image[rows].astype(np.float32)
  left, right = source[:, x0], source[:, x1]
  across = left + (right - left) * dx  # Each row's top (or bottom) values.
  top, bottom = across[picked[y0]], across[picked[y1]]
  return top + (bottom - top) * dy[:, None]


def _significant_bits(data: bytes) -> int:
  """A PNG's sBIT depth (its colour bytes' largest, never alpha's), or 0 without sBIT."""
  offset, length = image_rules.segment(data, True, b"sBIT", 0, b"")
  channels = image_rules.colour_samples(data[25])  # IHDR's colour type
  return max(data[offset : offset + min(max(length, 0), channels)], default=0) if offset >= 0 else 0
