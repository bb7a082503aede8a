"""Encoded image bytes -> model input, inside the exported graph, one bad element at a time.

TF Serving clients send whatever they like, so the serving signature defends
itself: each element's format and size are read from its header before any
decoding (PNG IHDR bytes, `extract_jpeg_shape`), images over the pixel limit,
too small, too elongated or with too many JPEG scans are never decoded, a blank
one is refused after decoding, and an element that fails to decode gets an
error string while the rest of the batch is answered. Decode errors are caught
per element by running the decodes through `tf.data` with `ignore_errors` (a
plain op error would fail the whole request).

Images are converted as the builder converted the training images: gray
directly (colour only when the file is colour, for the colourfulness check),
16-bit data scaled by its real bit depth, then the geometry the builder and
the input pipeline share (txr_data/geometry.py): EXIF orientation, the area
shrink to the training dataset's `max_side`, the pad-resize to a square.
"""

import tensorflow as tf

from txr_data import geometry
from txr_data import image_codec
from txr_lite import image_rules
from txr_model import ood

PNG_SIGNATURE = image_rules.PNG_SIGNATURE
MAX_JPEG_SCANS = image_rules.MAX_JPEG_SCANS
MIN_SIDE = image_rules.MIN_SIDE
MIN_CONTRAST = image_rules.MIN_CONTRAST
MAX_ASPECT = image_rules.MAX_ASPECT
ERRORS = image_rules.ERRORS


def _be32(b: tf.Tensor) -> tf.Tensor:
  """Big-endian uint32 from the last axis' 4 bytes, as int64."""
  b = tf.cast(b, tf.int64)
  return b[..., 0] * 2**24 + b[..., 1] * 2**16 + b[..., 2] * 2**8 + b[..., 3]


def _headers(image_bytes: tf.Tensor) -> tf.Tensor:
  """The first 32 bytes of each element, zero-padded: uint8 [n, 32]."""
  head = tf.strings.substr(image_bytes, 0, 32)
  head = tf.strings.substr(tf.strings.join([head, tf.constant(b"\0" * 32)]), 0, 32)
  return tf.reshape(tf.io.decode_raw(head, tf.uint8), [-1, 32])


def _collect(dataset: tf.data.Dataset, n: tf.Tensor, row: tuple) -> tuple:
  """Scatters a dataset of (index, values...) into [n, ...] tensors plus a `present` mask.

  `row` is a (dummy) element whose shapes and dtypes match the values: it is
  appended with index n, so the batch is never empty, and dropped.
  """
  sentinel = tf.data.Dataset.from_tensors((tf.cast(n, tf.int32), *row))
  batch = dataset.concatenate(sentinel).batch(tf.cast(n, tf.int64) + 1).get_single_element()
  index, values = batch[0], batch[1:]
  keep = index < n
  index = tf.boolean_mask(index, keep)[:, None]
  present = tf.scatter_nd(index, tf.ones_like(index[:, 0]), [n]) > 0
  out = []
  for v in values:
    v = tf.boolean_mask(v, keep)
    out.append(tf.scatter_nd(index, v, tf.concat([[n], tf.shape(v)[1:]], 0)))
  return present, *out


def _bytes_at(data: tf.Tensor, pos: tf.Tensor, n: int) -> tf.Tensor:
  """The n bytes of `data` at `pos` as int32 [n], zero past the end."""
  part = tf.strings.join([tf.strings.substr(data, pos, n), b"\0" * n])
  return tf.cast(tf.io.decode_raw(tf.strings.substr(part, 0, n), tf.uint8), tf.int32)


def _segment(data: tf.Tensor, is_png: tf.Tensor, png_kind: bytes, jpeg_marker: int,
             jpeg_prefix: bytes) -> tuple[tf.Tensor, tf.Tensor]:  # fmt: skip
  """Finds a metadata block by walking the file's structure, not by searching its bytes.

  A byte search finds 'sBIT' in a tEXt comment, and a fixed window misses an
  APP1 segment after 64 KB of others. Walks PNG chunks up to the first IDAT
  (where sBIT and eXIf must be), or JPEG segments up to the first scan.

  Args:
    data: one encoded image.
    is_png: whether it is a PNG (else a JPEG).
    png_kind: the PNG chunk type wanted.
    jpeg_marker: the JPEG marker wanted (0xE1: APP1).
    jpeg_prefix: what that JPEG segment's body starts with (EXIF's header).

  Returns:
    (the body's offset, its length); (-1, 0) when there is none.
  """
  size = tf.strings.length(data)
  data = tf.reshape(data, [])

  def step(i, pos, offset, length):
    head = _bytes_at(data, pos, 4)

    def png():
      kind = tf.strings.substr(data, pos + 4, 4)
      found = tf.equal(kind, png_kind)
      stop = found | tf.equal(kind, b"IDAT") | tf.equal(kind, b"IEND")
      body = head[0] * 2**24 + head[1] * 2**16 + head[2] * 2**8 + head[3]
      # A length over 2**31 wraps negative: stop rather than walk backwards.
      return found, stop | (body < 0), pos + 8, body, pos + 12 + body

    def jpeg():
      body = head[2] * 256 + head[3] - 2
      prefix = tf.strings.substr(data, pos + 4, len(jpeg_prefix))
      found = (head[1] == jpeg_marker) & tf.equal(prefix, jpeg_prefix)
      stop = found | (head[0] != 0xFF) | (head[1] == 0xDA) | (head[1] == 0xD9) | (body < 0)
      return found, stop, pos + 4, body, pos + 4 + body

    found, stop, at, body, following = tf.cond(is_png, png, jpeg)
    stop |= following + 8 > size  # Also stops a body that runs past the end.
    pos = tf.where(stop, size, following)
    scalars = (pos, tf.where(found, at, offset), tf.where(found, body, length))
    return i + 1, *(tf.reshape(x, []) for x in scalars)

  start = tf.where(is_png, len(PNG_SIGNATURE), 2)
  _, _, offset, length = tf.while_loop(
    lambda i, pos, *_: (i < image_rules.MAX_SEGMENTS) & (pos + 8 <= size),
    step,
    (tf.constant(0), start, tf.constant(-1), tf.constant(0)),
  )
  return offset, length


def _orientation(data: tf.Tensor, is_png: tf.Tensor) -> tf.Tensor:
  """The EXIF orientation (1-8) of a PNG's eXIf chunk or a JPEG's EXIF APP1; 1 if none."""
  offset, length = _segment(data, is_png, b"eXIf", 0xE1, b"Exif\0\0")
  exif = tf.strings.substr(data, tf.maximum(offset, 0), length)
  orientation = tf.constant(1)
  for marker in image_rules.ORIENTATION_ENTRIES:
    parts = tf.strings.split(exif, sep=marker, maxsplit=1)
    found = (offset >= 0) & (tf.size(parts) == 2)
    value = _bytes_at(parts[-1], 0, 1)[0]
    orientation = tf.where(found & (value >= 1) & (value <= 8), value, orientation)
  return orientation


def _significant_bits(data: tf.Tensor, channels: int) -> tf.Tensor:
  """A PNG's sBIT depth, or 0 when the file has no sBIT chunk.

  sBIT has a byte per channel, alpha's last: the depth is the largest of the
  colour bytes (`channels`, the decode's: `image_rules.colour_samples` of the
  colour type), never alpha's, which may say 16 over 12-bit gray.
  """
  offset, length = _segment(data, tf.constant(True), b"sBIT", 0, b"")
  body = tf.strings.substr(data, tf.maximum(offset, 0), tf.clip_by_value(length, 0, channels))
  return tf.where(offset >= 0, tf.reduce_max(_bytes_at(body, 0, channels)), 0)


def _gray(data, is_png, png_depth, colour):
  """Decodes one validated element to uint8 gray [h, w, 1] and its colourfulness."""

  def decode(channels):
    def png():
      def sixteen():
        image = tf.io.decode_png(data, channels=channels, dtype=tf.uint16)
        return image_codec.to_uint8(image, _significant_bits(data, channels))

      return tf.cond(png_depth == 16, sixteen, lambda: tf.io.decode_png(data, channels=channels))

    def jpeg():
      # libjpeg's accurate DCT, which Pillow (txr-predict-lite) decodes with: TF's default,
      # the fast one, is up to 80 grey levels off on fine detail at quality 100.
      return tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE")

    return tf.cond(is_png, png, jpeg)

  def from_colour():
    rgb = decode(3)
    # Radiographs saved as RGB have equal channels: keep them exact, as the builder does.
    equal = tf.reduce_all(rgb[..., :1] == rgb)
    gray = tf.cond(equal, lambda: rgb[..., :1], lambda: tf.image.rgb_to_grayscale(rgb))
    return gray, ood.colourfulness(rgb[::4, ::4])  # A subsample: the statistic is global.

  return tf.cond(colour, from_colour, lambda: (decode(1), tf.constant(0.0)))


def stored_gray(data: tf.Tensor) -> tf.Tensor:
  """uint8 gray [h, w, 1] from a PNG a builder stored: 8-bit, or 16-bit (montgomery_cxr/original).

  16-bit data are scaled by their real bit depth (sBIT, else the data's), as
  the builders' 8-bit configs and this graph scale them: decoding to uint8
  keeps only the high byte, which leaves low-aligned 12-bit data near black.
  """
  depth = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 24, 1), tf.uint8)[0], tf.int32)
  return _gray(data, tf.constant(True), depth, tf.constant(False))[0]


def decode_batch(image_bytes: tf.Tensor, image_size: int, max_side: int | None):
  """Decodes a batch of encoded PNG/JPEG images for the model, element by element.

  Args:
    image_bytes: string [n], each element one encoded image.
    image_size: the model's input size.
    max_side: the training dataset's stored longest side (its builder config),
      or None if it stored the source pixels.

  Returns:
    (images uint8 [n, size, size, 1] (zeros where invalid), colourfulness [n],
    width / height [n], error string [n]: '' where the element is valid).
  """
  image_bytes = tf.reshape(image_bytes, [-1])
  n = tf.size(image_bytes)
  head = _headers(image_bytes)
  length = tf.strings.length(image_bytes)
  is_png = tf.reduce_all(head[:, :8] == tf.io.decode_raw(PNG_SIGNATURE, tf.uint8), axis=1)
  is_png &= tf.reduce_all(head[:, 12:16] == tf.io.decode_raw(b"IHDR", tf.uint8), axis=1)
  jpeg_signature = image_rules.JPEG_SIGNATURE
  is_jpeg = tf.reduce_all(
    head[:, : len(jpeg_signature)] == tf.io.decode_raw(jpeg_signature, tf.uint8), axis=1
  )
  png_width, png_height = _be32(head[:, 16:20]), _be32(head[:, 20:24])
  png_depth = tf.cast(head[:, 24], tf.int32)
  png_colour = tf.cast(head[:, 25], tf.int32) & 2 > 0  # RGB, RGBA and palette types

  # JPEG sizes need the SOF segment: parsed by TF, per element, errors caught.
  index = tf.range(n)
  jpegs = tf.data.Dataset.from_tensor_slices((index, image_bytes, is_jpeg))
  jpegs = jpegs.filter(lambda i, b, jpeg: jpeg).map(
    lambda i, b, jpeg: (i, tf.cast(tf.image.extract_jpeg_shape(b), tf.int64))
  )
  jpeg_ok, jpeg_shape = _collect(jpegs.ignore_errors(), n, (tf.zeros([3], tf.int64),))
  width = tf.where(is_png, png_width, jpeg_shape[:, 1])
  height = tf.where(is_png, png_height, jpeg_shape[:, 0])
  pixels = width * height
  colour = tf.where(is_png, png_colour, jpeg_shape[:, 2] >= 3)
  # Each scan starts with an SOS marker, which entropy-coded data never holds (0xFF is stuffed).
  scans = tf.strings.split(tf.where(is_jpeg, image_bytes, ""), sep=b"\xff\xda").row_lengths() - 1
  short, long = tf.minimum(width, height), tf.maximum(width, height)

  error = tf.fill([n], "")
  error = tf.where(~(is_png | is_jpeg), ERRORS["format"], error)
  error = tf.where(is_jpeg & ~jpeg_ok, ERRORS["decode"], error)
  sized = is_png | jpeg_ok
  error = tf.where(sized & (scans > MAX_JPEG_SCANS), ERRORS["scans"], error)
  error = tf.where(sized & (short < MIN_SIDE), ERRORS["too_small"], error)
  error = tf.where(sized & (tf.cast(long, tf.float64) > MAX_ASPECT * tf.cast(short, tf.float64)),
                   ERRORS["aspect"], error)  # fmt: skip
  error = tf.where(sized & (pixels > image_rules.MAX_PIXELS), ERRORS["too_large"], error)
  error = tf.where(sized & (pixels <= 0), ERRORS["no_pixels"], error)
  error = tf.where(length == 0, ERRORS["empty"], error)

  def one(i, data, png, depth, has_colour):
    gray, colourfulness = _gray(data, png, depth, has_colour)
    gray = geometry.orient(gray, _orientation(data, png))  # As the builder orients eXIf PNGs.
    shape = tf.cast(tf.shape(gray), tf.float32)
    if max_side:
      gray = geometry.shrink(gray, max_side)
    contrast = tf.math.reduce_std(tf.cast(gray, tf.float32))
    image = geometry.resize_to_square(gray, image_size)
    return i, image, colourfulness, shape[1] / shape[0], contrast

  valid = tf.data.Dataset.from_tensor_slices(
    (index, image_bytes, is_png, png_depth, colour, error == "")
  )
  decoded = (
    valid.filter(lambda *x: x[-1])
    .map(lambda *x: one(*x[:-1]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    .ignore_errors()
  )
  row = (tf.zeros([image_size, image_size, 1], tf.uint8), *[tf.constant(0.0)] * 3)
  ok, images, colourfulness, aspect, contrast = _collect(decoded, n, row)
  error = tf.where((error == "") & ~ok, ERRORS["decode"], error)
  error = tf.where((error == "") & (contrast < MIN_CONTRAST), ERRORS["blank"], error)
  return images, colourfulness, aspect, error
