"""Validates chest X-ray PNGs and normalises them to 8-bit, 1-channel grayscale.

Validation walks the PNG chunks (signature, lengths, CRCs, IEND) without
decoding, so a truncated or mislabelled file is caught by name before any
expensive work, and an image that is already 8-bit grayscale can be stored
as-is. Everything else is decoded with TensorFlow ops, which release the GIL,
so callers can run them in threads.
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
  if not data.startswith(PNG_SIGNATURE):
    raise BadImageError(
      f"{name}: not a PNG file (bad signature); replace it with the original PNG from the archive."
    )
  view = memoryview(data)  # Slices without copying megabytes of IDAT.
  pos, header, ended = len(PNG_SIGNATURE), None, False
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
      header = PngInfo(*struct.unpack_from(">IIBB", body))
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
  return header


def to_grayscale(data: bytes, info: PngInfo) -> tf.Tensor:
  """Decodes a validated PNG into a uint8 [height, width, 1] tensor.

  Palette images are expanded by libpng, 16-bit images are scaled to 8 bits,
  alpha is dropped, and RGB is reduced to one channel: exactly when the
  channels are equal (as in the archive), by luma otherwise.
  """
  dtype = tf.uint16 if info.bit_depth == 16 else tf.uint8
  image = tf.io.decode_png(data, channels=0, dtype=dtype)
  image = tf.image.convert_image_dtype(image, tf.uint8)
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
    scale = max_side / max(info.width, info.height)
    size = [max(1, round(info.height * scale)), max(1, round(info.width * scale))]
    image = tf.image.resize(image, size, method="area")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.io.encode_png(image).numpy()
