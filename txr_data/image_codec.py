"""Validates chest X-ray PNGs and normalises them to 8-bit, 1-channel grayscale.

Validation walks the PNG chunks (signature, lengths, CRCs, IEND) and inflates
the image data without decoding it, so a truncated, corrupt or mislabelled
file is caught by name before any expensive work, and an image that is already
8-bit grayscale can be stored as-is. Everything else is decoded with
TensorFlow ops, which release the GIL, so callers can run them in threads.

`to_uint8` is a TensorFlow function that also runs in the exported serving
graph (txr_model/decode.py), as do the orientation and the area shrink
(geometry.py), so served images are converted exactly as the builder
converted the training images.
"""

import dataclasses
import struct
import zlib

import tensorflow as tf

from txr_data import geometry
from txr_lite import image_rules

PNG_SIGNATURE = image_rules.PNG_SIGNATURE
JPEG_SIGNATURE = image_rules.JPEG_SIGNATURE
MAX_PIXELS = image_rules.MAX_PIXELS
MAX_ASPECT = image_rules.MAX_ASPECT
# What converting one image may take (see `decode_bytes`): the builder converts
# one image per core at once. The largest real radiographs fit: 4900 x 4900 in
# 8-bit RGBA takes about 0.9 GiB, Montgomery's 20 Mpx in 16 bits 0.4 GiB.
MAX_DECODE_BYTES = 2**30

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
  orientation: int = 1  # From an eXIf chunk before the image data; 1 (upright) without one.

  @property
  def is_gray8(self) -> bool:
    """Whether the file is already what the builder stores: 8-bit, one channel."""
    return self.color_type == _GRAY and self.bit_depth == 8


def _check_size(width: int, height: int, name: str) -> None:
  """Refuses a film of no pixels, too many, or sides beyond 1:MAX_ASPECT (any format)."""
  if width * height > MAX_PIXELS or not width * height:
    raise BadImageError(
      f"{name}: refusing a {width} x {height} image (limit {MAX_PIXELS} pixels); this is not a"
      " chest X-ray."
    )
  if max(width, height) > MAX_ASPECT * min(width, height):
    raise BadImageError(
      f"{name}: refusing a {width} x {height} image: a chest X-ray's sides are within"
      f" 1:{MAX_ASPECT}; crop it to the chest or remove it."
    )


def png_info(data: bytes, name: str) -> PngInfo:
  """Returns the PNG header of `data` after checking every chunk's CRC and IEND.

  Raises:
    BadImageError: naming `name`, when `data` is empty, not a PNG, truncated,
      corrupt, or absurdly large.
  """
  if not data:
    raise BadImageError(f"{name}: the file is empty (0 bytes); re-copy it.")
  if data.startswith(JPEG_SIGNATURE):  # Re-distributed copies often save JPEGs as .png.
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
      # A byte per channel, alpha's last: the colour bytes set the depth, never alpha's.
      colour_bytes = body[: image_rules.colour_samples(header.color_type)]
      header = dataclasses.replace(header, significant_bits=max(colour_bytes))
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
  _check_size(header.width, header.height, name)
  if decode_bytes(header) > MAX_DECODE_BYTES:
    raise BadImageError(
      f"{name}: a {header.width} x {header.height} {header.bit_depth}-bit"
      f" {_KINDS.get(header.color_type, 'PNG')} needs about {decode_bytes(header) / 2**30:.1f}"
      f" GiB to convert (limit {MAX_DECODE_BYTES / 2**30:g} GiB); reduce it to 8-bit grayscale."
    )
  _check_image_data(idat, header, name)
  # EXIF's orientation as the serving graph and txr-predict-lite read it: one reader.
  return dataclasses.replace(header, orientation=image_rules.exif_orientation(data, True))


_CHANNELS = image_rules.PNG_CHANNELS
_KINDS = {_GRAY: "grayscale PNG", _RGB: "RGB PNG", _PALETTE: "palette PNG",
          _GRAY_ALPHA: "grayscale+alpha PNG", _RGBA: "RGBA PNG"}  # fmt: skip


def decode_bytes(info: PngInfo) -> int:
  """About the most memory converting this image takes (`to_grayscale`, then a resize), in bytes.

  From peaks measured on 16-Mpx files: a 16-bit gray file, decoded to one
  channel and scaled in float32, takes about 19 bytes per pixel; a 16-bit
  colour one three times that (its three channels are scaled, then reduced:
  the peak grew by 36 against 12 bytes per pixel on a 16-Mpx file); an
  8-bit one its channels (a palette's expanded to 4) plus about 8 per channel
  to reduce colour in float32, plus 5 for alpha and the area resize.
  """
  if info.bit_depth == 16:
    per_pixel = 60 if info.color_type & 2 else 20
  else:
    channels = 4 if info.color_type == _PALETTE else _CHANNELS.get(info.color_type, 4)
    per_pixel = channels * (9 if info.color_type & 2 else 1) + 5
  return info.width * info.height * per_pixel


def _check_image_data(idat: list, info: PngInfo, name: str) -> None:
  """Inflates the IDAT stream (no unfiltering) and checks it holds every scanline.

  Valid CRCs only prove the chunks were copied intact; a corrupt or cut zlib
  stream would otherwise be stored and fail only when the split is read.
  Inflating costs a few milliseconds per radiograph, far less than a decode.
  """
  expected = image_rules.png_image_data_bytes(
    info.width, info.height, info.bit_depth, info.color_type, info.interlace
  )
  try:
    rows, ended = image_rules.inflate(idat, expected)
    size = len(rows)
  except zlib.error as e:
    raise BadImageError(f"{name}: corrupt PNG image data ({e}); re-copy it.") from e
  if size != expected or not ended:
    raise BadImageError(
      f"{name}: corrupt PNG image data ({size} of {expected} bytes after inflating"
      f"{'' if ended else ', stream cut short'}); re-download or re-extract it."
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
  # The bits the maximum needs, counted exactly: float32 logarithms counted 14
  # for 8191 eagerly (the builder) and 13 in a graph (serving).
  top = tf.cast(tf.reduce_max(image), tf.int32)
  data_bits = tf.reduce_sum(tf.cast(top >= 2 ** tf.range(16), tf.float32))
  bits = tf.cast(significant_bits, tf.float32)
  bits = tf.clip_by_value(tf.maximum(bits, data_bits), 8.0, 16.0)
  scaled = tf.round(values * (255.0 / (tf.pow(2.0, bits) - 1.0)))
  return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


def to_grayscale(data: bytes, info: PngInfo) -> tf.Tensor:
  """Decodes a validated PNG into a uint8 [height, width, 1] tensor, as stored (not oriented).

  Palette images are expanded by libpng, alpha is dropped, and RGB is reduced
  to one channel: exactly when the channels are equal (as in the archive), by
  `tf.image.rgb_to_grayscale`'s luma otherwise, as the serving graph reduces
  them (decode.py). 16-bit images are decoded without alpha (so an opaque
  alpha's 65535 never sets their bit depth) and scaled to 8 bits by their real
  bit depth (`to_uint8`) first, colour ones then reduced by the same rule (libpng's
  own reduction weighs the channels otherwise, by Rec. 709).
  """
  if info.bit_depth == 16:
    channels = 3 if info.color_type & 2 else 1
    image = tf.io.decode_png(data, channels=channels, dtype=tf.uint16)
    image = to_uint8(image, info.significant_bits)
  else:
    image = tf.io.decode_png(data, channels=0)
  channels = image.shape[-1]
  if channels in (2, 4):  # drop alpha
    image = image[..., : channels - 1]
  if image.shape[-1] == 3:
    if bool(tf.reduce_all(image[..., :1] == image)):
      image = image[..., :1]
    else:
      image = tf.image.rgb_to_grayscale(image)
  return image


def with_significant_bits(png: bytes, bits: int) -> bytes:
  """`png` (a one-channel PNG, as tf.io.encode_png writes) with an sBIT chunk of `bits` after IHDR.

  TensorFlow's encoder writes no sBIT: a re-encoded 12-bit source would lose
  the depth it is scaled by (`to_uint8`), and read brighter by its data's maximum.
  """
  body = b"sBIT" + bytes([bits])
  chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
  return png[:33] + chunk + png[33:]  # The signature and IHDR take 33 bytes.


def normalise_png(
  data: bytes, name: str, max_side: int | None = None, info: PngInfo | None = None
) -> bytes:
  """Returns `data` as an upright 8-bit grayscale PNG, its longest side <= `max_side`.

  An 8-bit grayscale source that needs no resizing or orienting is returned
  unchanged, without a decode/encode round trip.

  Args:
    data: the PNG file's bytes.
    name: the file, for errors.
    max_side: the longest side to store, or None to keep the size.
    info: `png_info(data, name)` when the caller has it; read here otherwise.

  Raises:
    BadImageError: naming the file, when it cannot be used.
  """
  info = png_info(data, name) if info is None else info
  needs_resize = max_side is not None and max(info.width, info.height) > max_side
  if info.is_gray8 and not needs_resize and info.orientation == 1:
    return data
  try:
    image = geometry.orient(to_grayscale(data, info), info.orientation)
  except tf.errors.OpError as e:
    raise BadImageError(f"{name}: cannot decode PNG ({e.message}); re-copy it.") from e
  if needs_resize:
    image = geometry.shrink(image, max_side)
  return tf.io.encode_png(image).numpy()


def _encoded(image: tf.Tensor, max_side: int | None) -> bytes:
  if max_side is not None:
    image = geometry.shrink(image, max_side)
  return tf.io.encode_png(image).numpy()


def normalise_jpeg(data: bytes, name: str, max_side: int | None = None) -> bytes:
  """A JPEG film as an upright 8-bit grayscale PNG, its longest side <= `max_side`.

  Decoded to luma with libjpeg's accurate integer DCT and oriented by its EXIF
  block, as the serving graph and txr-predict-lite read a JPEG.

  Raises:
    BadImageError: naming the file, when it cannot be used.
  """
  if not data.startswith(JPEG_SIGNATURE):
    raise BadImageError(f"{name}: not a JPEG file (wrong signature); re-export it as JPEG or PNG.")
  try:
    height, width, _ = (int(v) for v in tf.io.extract_jpeg_shape(data).numpy())
    _check_size(width, height, name)
    image = tf.io.decode_jpeg(data, channels=1, dct_method="INTEGER_ACCURATE")
  except tf.errors.OpError as e:
    raise BadImageError(f"{name}: cannot decode JPEG ({e.message}); re-copy it.") from e
  image = geometry.orient(image, image_rules.exif_orientation(data, False))
  return _encoded(image, max_side)


def normalise_dicom(data: bytes, name: str, max_side: int | None = None) -> bytes:
  """A DICOM film's pixels as an 8-bit grayscale PNG, its longest side <= `max_side`.

  The pixels are txr_lite.dicom's (modality and VOI LUTs, stored depth,
  MONOCHROME1 inverted): what txr-predict and txr-predict-lite score.

  Raises:
    BadImageError: naming the file, when it cannot be used (pydicom missing included).
  """
  from txr_lite import dicom  # Only DICOM needs pydicom.

  try:
    gray = dicom.to_gray(data, MAX_PIXELS)
  except ValueError as e:
    raise BadImageError(f"{name}: {e}; re-export it or remove it.") from None
  _check_size(gray.shape[1], gray.shape[0], name)
  return _encoded(tf.constant(gray[..., None]), max_side)


def normalise(data: bytes, name: str, kind: str, max_side: int | None = None) -> bytes:
  """A film of `kind` ('png', 'jpeg' or 'dicom') as the builders store images."""
  if kind == "png":
    return normalise_png(data, name, max_side)
  if kind == "jpeg":
    return normalise_jpeg(data, name, max_side)
  if kind == "dicom":
    return normalise_dicom(data, name, max_side)
  raise ValueError(f"{name}: unknown kind {kind!r}")
