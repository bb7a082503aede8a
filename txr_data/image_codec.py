"""Validates chest X-ray PNGs and normalises them to 8-bit, 1-channel grayscale.

Validation walks the PNG chunks (signature, lengths, CRCs, IEND) and inflates
the image data without decoding it, so a truncated, corrupt or mislabelled
file is caught by name before any expensive work, and an image that is already
8-bit grayscale can be stored as-is. Everything else is decoded with
TensorFlow ops, which release the GIL, so callers can run them in threads.

`to_uint8` and `shrink` are TensorFlow functions that also run in the exported
serving graph (txr_model/decode.py), so served images are converted exactly
as the builder converted the training images.
"""

import dataclasses
import struct
import zlib

import tensorflow as tf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Real Shenzhen images are at most about 4900 x 4900 (24 Mpx). Anything far
# beyond is a decompression bomb, not a radiograph.
MAX_PIXELS = 100_000_000

_GRAY, _RGB, _PALETTE, _GRAY_ALPHA, _RGBA = 0, 2, 3, 4, 6


class BadImageError(ValueError):
  """A source image that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class PngInfo:
  """What a PNG's header (IHDR) says, read without decoding."""

  width: int
  height: int
  bit_depth: int
  color_type: int
  interlace: int = 0
  significant_bits: int = 0  # From the sBIT chunk; 0 when the file has none.

  @property
  def is_gray8(self) -> bool:
    """Whether the file is already what the builder stores: 8-bit, one channel."""
    return self.color_type == _GRAY and self.bit_depth == 8


def png_info(data: bytes, name: str) -> PngInfo:
  """Returns the PNG header of `data` after checking every chunk's CRC and IEND.

  Raises:
    BadImageError: naming `name`, when `data` is empty, not a PNG, truncated,
      corrupt, or absurdly large.
  """
  if not data:
    raise BadImageError(f"{name}: the file is empty (0 bytes); re-copy it.")
  if data.startswith(b"\xff\xd8\xff"):  # Re-distributed copies often save JPEGs as .png.
    raise BadImageError(
      f"{name}: a JPEG file named .png; convert it to PNG or use the original archive."
    )
  if not data.startswith(PNG_SIGNATURE):
    raise BadImageError(
      f"{name}: not a PNG file (bad signature); replace it with the original PNG from the archive."
    )
  view = memoryview(data)  # Slices without copying megabytes of IDAT.
  pos, header, ended, idat = len(PNG_SIGNATURE), None, False, []
  while pos + 12 <= len(data):
    length, kind = struct.unpack_from(">I4s", data, pos)
    end = pos + 12 + length
    if end > len(data):
      break
    body = view[pos + 8 : pos + 8 + length]
    (crc,) = struct.unpack_from(">I", data, end - 4)
    if zlib.crc32(body, zlib.crc32(kind)) != crc:
      raise BadImageError(f"{name}: corrupt PNG (CRC mismatch in chunk {kind!r}); re-copy it.")
    if kind == b"IHDR":
      width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", body)
      header = PngInfo(width, height, depth, colour, interlace)
    if kind == b"sBIT" and header is not None and length:
      header = dataclasses.replace(header, significant_bits=max(body))
    if kind == b"IDAT":
      idat.append(body)
    if kind == b"IEND":
      ended = True
      break
    pos = end
  if header is None or not ended:
    raise BadImageError(
      f"{name}: truncated PNG (no {'IHDR' if header is None else 'IEND'}"
      " chunk); re-download or re-extract it."
    )
  if header.width * header.height > MAX_PIXELS or not header.width * header.height:
    raise BadImageError(
      f"{name}: refusing a {header.width} x {header.height} image (limit"
      f" {MAX_PIXELS} pixels); this is not a chest X-ray."
    )
  _check_image_data(idat, header, name)
  return header


_CHANNELS = {_GRAY: 1, _RGB: 3, _PALETTE: 1, _GRAY_ALPHA: 2, _RGBA: 4}


def _scanline_bytes(info: PngInfo) -> int:
  """The inflated size of the image data: one filter byte plus the packed pixels per row."""
  bits = _CHANNELS.get(info.color_type, 1) * info.bit_depth

  def size(width, height):
    return height * (1 + (width * bits + 7) // 8) if width and height else 0

  if not info.interlace:
    return size(info.width, info.height)
  # Adam7: seven passes, each a sub-image (start, step) in x and y.
  passes = ((0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
            (0, 1, 1, 2))  # fmt: skip
  return sum(
    size((info.width - x0 + dx - 1) // dx, (info.height - y0 + dy - 1) // dy)
    for x0, dx, y0, dy in passes
  )


def _check_image_data(idat: list, info: PngInfo, name: str) -> None:
  """Inflates the IDAT stream (no unfiltering) and checks it holds every scanline.

  Valid CRCs only prove the chunks were copied intact; a corrupt or cut zlib
  stream would otherwise be stored and fail only when the split is read.
  Inflating costs a few milliseconds per radiograph, far less than a decode.
  """
  inflater = zlib.decompressobj()
  expected = _scanline_bytes(info)
  try:
    size = 0
    for body in idat:
      size += len(inflater.decompress(body, expected + 1 - size))
      if size > expected:
        break
  except zlib.error as e:
    raise BadImageError(f"{name}: corrupt PNG image data ({e}); re-copy it.") from e
  if size != expected or not inflater.eof:
    raise BadImageError(
      f"{name}: corrupt PNG image data ({size} of {expected} bytes after inflating"
      f"{'' if inflater.eof else ', stream cut short'}); re-download or re-extract it."
    )


def to_uint8(image: tf.Tensor, significant_bits=0) -> tf.Tensor:
  """Scales a uint8 or uint16 image to uint8 by its real bit depth.

  Detectors often store 10- or 12-bit data in 16-bit PNGs, in one of two ways.
  A PNG-conformant encoder (PNG 1.2 section 9.1) scales the samples up to the
  full 16 bits and records the original depth in sBIT; other writers store the
  data low-aligned (0-4095), with or without sBIT. Scaling low-aligned data by
  1/257 leaves it nearly black; scaling scaled-up data by the sBIT depth
  leaves it white. So the depth is the larger of sBIT's and the bits the
  data's maximum needs: low-aligned 12-bit data whose brightest pixel is 3000
  is still scaled by 4095 (contrast is not stretched per image), and data that
  fills 16 bits is scaled by 65535 whatever sBIT says.

  Args:
    image: a uint8 or uint16 tensor.
    significant_bits: the sBIT depth, or 0 (none); a Python int or a tensor.

  Returns:
    A uint8 tensor of the same shape.
  """
  if image.dtype == tf.uint8:
    return image
  values = tf.cast(image, tf.float32)
  data_bits = tf.math.ceil(tf.math.log(tf.reduce_max(values) + 1.0) / tf.math.log(2.0))
  bits = tf.cast(significant_bits, tf.float32)
  bits = tf.clip_by_value(tf.maximum(bits, data_bits), 8.0, 16.0)
  scaled = tf.round(values * (255.0 / (tf.pow(2.0, bits) - 1.0)))
  return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


def shrink(image: tf.Tensor, max_side) -> tf.Tensor:
  """Area-resizes a uint8 [h, w, c] image so its longest side is at most `max_side`.

  Aspect is kept; a smaller image is returned unchanged. Works in graphs (the
  serving signature) as well as eagerly (the builder).
  """
  shape = tf.cast(tf.shape(image)[:2], tf.float64)
  scale = tf.cast(max_side, tf.float64) / tf.reduce_max(shape)
  size = tf.cast(tf.maximum(tf.round(shape * scale), 1.0), tf.int32)

  def resized():
    out = tf.image.resize(image, size, method="area")
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.cond(scale < 1.0, resized, lambda: image)


def to_grayscale(data: bytes, info: PngInfo) -> tf.Tensor:
  """Decodes a validated PNG into a uint8 [height, width, 1] tensor.

  Palette images are expanded by libpng, 16-bit images are scaled to 8 bits by
  their real bit depth (`to_uint8`), alpha is dropped, and RGB is reduced to
  one channel: exactly when the channels are equal (as in the archive), by
  luma otherwise.
  """
  dtype = tf.uint16 if info.bit_depth == 16 else tf.uint8
  image = to_uint8(tf.io.decode_png(data, channels=0, dtype=dtype), info.significant_bits)
  channels = image.shape[-1]
  if channels in (2, 4):  # drop alpha
    image = image[..., : channels - 1]
  if image.shape[-1] == 3:
    if bool(tf.reduce_all(image[..., :1] == image)):
      image = image[..., :1]
    else:
      image = tf.image.rgb_to_grayscale(image)
  return image


def normalise_png(data: bytes, name: str, max_side: int | None = None) -> bytes:
  """Returns `data` as an 8-bit grayscale PNG, its longest side <= `max_side`.

  An 8-bit grayscale source that needs no resizing is returned unchanged,
  without a decode/encode round trip.
  """
  info = png_info(data, name)
  needs_resize = max_side is not None and max(info.width, info.height) > max_side
  if info.is_gray8 and not needs_resize:
    return data
  try:
    image = to_grayscale(data, info)
  except tf.errors.OpError as e:
    raise BadImageError(f"{name}: cannot decode PNG ({e.message}); re-copy it.") from e
  if needs_resize:
    image = shrink(image, max_side)
  return tf.io.encode_png(image).numpy()
