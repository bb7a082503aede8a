"""What an input image must be, shared by the serving graph and the TF-free preprocessing.

The one source of these values for txr_data.image_codec (the builders),
txr_model.decode and txr_model.ood (the serving graph) and txr_lite.preprocess
(txr-predict-lite), and where both look for metadata (`segment`, and
`exif_orientation`, the pure-Python EXIF reader of txr-predict-lite and the
local_cxr builder). It imports only the standard library, so any of them can
use it.
"""

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # Start of image, then the first segment's marker byte.
# Real Shenzhen images are at most about 4900 x 4900 (24 Mpx). Anything far
# beyond is a decompression bomb, not a radiograph.
MAX_PIXELS = 100_000_000
# A progressive JPEG decodes every scan over the whole image: thousands of tiny
# scans make a small file cost minutes. Real encoders write about 10.
MAX_JPEG_SCANS = 100
# Below these, an image holds no radiograph: a thumbnail, an icon, a blank page.
MIN_SIDE = 32
MIN_CONTRAST = 2.0  # Standard deviation in grey levels (0-255); a radiograph's is about 50.
# Longest over shortest side: chest films are about 1.35 at most; a 10 x 20000
# strip would be stored 512 x 1.
MAX_ASPECT = 4
# Radiographs are gray: Hasler-Suesstrunk colourfulness is 0 for them and
# above ~15 for ordinary colour photographs.
MAX_COLOURFULNESS = 10.0
# Chest films are roughly square (the archive: about 0.75-1.35 width/height).
ASPECT_RANGE = (0.5, 2.0)
# A chest film shows its mediastinum and spine (the middle columns) brighter than the lung
# fields either side; a negative (a MONOCHROME1 export left uninverted, an inverted film)
# shows the reverse, and the network scores it as if it were a film. Polarity: the middle
# strip's mean grey level minus that of the brighter lung strip, over the middle rows of
# the network's square input (fractions of its side). Per side, not their mean: a ramp or
# a gradient (garbage that decodes, smooth like a film) has one side as much brighter than
# the middle as the other is darker, and its mean of zero passed; the learned detector of
# a briefly trained model let such images through in one run of two (tests/test_learning).
POLARITY_ROWS = (0.25, 0.75)
POLARITY_CENTRE = (0.45, 0.55)
POLARITY_LUNGS = ((0.15, 0.35), (0.65, 0.85))
MIN_POLARITY = -20.0  # Grey levels; a film below it is flagged out of distribution.
# A film shrunk to the network's input is smooth: each pixel is much like its right-hand
# neighbour, where noise, or garbage that decodes, has no such likeness. Measured over the
# middle of the square input (fractions of its side), which is film, not padding, for any
# aspect ratio within ASPECT_RANGE. The generated films (184: both samples and 100 of the
# demo's) correlate 0.99 or more at 299 px, 0.87 at 75 and 0.49 at 32 (the sample's
# 100-128 px films' own grain); uniform noise -0.09 to 0.21 at these sizes.
SMOOTHNESS_SPAN = (0.3, 0.7)
MIN_SMOOTHNESS = 0.3  # Correlation of horizontal neighbours; below it, flagged.
# Where metadata is looked for: walking at most this many PNG chunks (before
# IDAT) or JPEG segments (before the first scan); real files have a handful.
MAX_SEGMENTS = 256
# The start of an EXIF IFD entry for Orientation (tag 0x0112, type SHORT, count
# 1) in either byte order; the value's low byte follows. Found by splitting on
# the bytes: TF's regexes are UTF-8 and do not match arbitrary binary.
ORIENTATION_ENTRIES = (
  b"\x01\x12\x00\x03\x00\x00\x00\x01\x00",
  b"\x12\x01\x03\x00\x01\x00\x00\x00",
)
# Why an input is refused, by kind; the serving graph returns these strings.
ERRORS = {
  "empty": "empty input",
  "format": "not a PNG or JPEG image",
  "no_pixels": "the header declares an image without pixels (width or height 0)",
  "too_large": f"more than {MAX_PIXELS} pixels: too large for a radiograph",
  "too_small": f"a side under {MIN_SIDE} pixels: too small for a radiograph",
  "aspect": f"aspect ratio beyond {MAX_ASPECT:g}:1: not a radiograph",
  "scans": f"a progressive JPEG with more than {MAX_JPEG_SCANS} scans: refused (costly to decode)",
  "decode": "cannot decode: corrupt or truncated image data",
  "blank": f"almost no contrast (pixel standard deviation under {MIN_CONTRAST:g} grey levels):"
  " a blank image, not a radiograph",
}


# Samples per pixel of each PNG colour type (gray, RGB, palette, gray+alpha, RGBA).
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def colour_samples(colour_type: int) -> int:
  """A PNG colour type's colour samples, alpha aside: 3 for RGB, RGBA and palette, else 1.

  sBIT holds a byte per sample, alpha's last: these first bytes set the depth.
  """
  return 3 if colour_type & 2 else 1


def png_image_data_bytes(width, height, bit_depth, colour_type, interlace) -> int:
  """The inflated size of a PNG's image data: a filter byte plus the packed pixels per row."""
  bits = PNG_CHANNELS.get(colour_type, 1) * bit_depth

  def size(w, h):
    return h * (1 + (w * bits + 7) // 8) if w and h else 0

  if not interlace:
    return size(width, height)
  # Adam7: seven passes, each a sub-image (start, step) in x and y.
  passes = ((0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
            (0, 1, 1, 2))  # fmt: skip
  return sum(
    size((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, dx, y0, dy in passes
  )


def inflate(idat, expected: int) -> tuple[bytes, bool]:
  """Inflates IDAT bodies (no unfiltering) up to one byte past `expected`.

  A complete zlib stream can still hold fewer rows than the header declares:
  its CRCs are valid, libpng refuses it, and some decoders fill the missing
  rows in. Every reader checks the size of what this returns.

  Args:
    idat: the IDAT chunks' bodies, in order.
    expected: `png_image_data_bytes` of the header.

  Returns:
    (the filtered rows, at most expected + 1 bytes; whether the stream ended).

  Raises:
    zlib.error: for corrupt compressed data.
  """
  import zlib

  inflater, parts, size = zlib.decompressobj(), [], 0
  for body in idat:
    parts.append(inflater.decompress(body, expected + 1 - size))
    size += len(parts[-1])
    if size > expected:
      break
  return b"".join(parts), inflater.eof


def segment(data: bytes, is_png: bool, png_kind: bytes, jpeg_marker: int, jpeg_prefix: bytes):
  """A metadata block's (offset, length), walking the file as decode.py's `_segment` does.

  The one walk of the pure-Python readers: txr-predict-lite's and the local_cxr builder's.

  Returns:
    (the body's offset, its length); (-1, 0) when there is none.
  """
  size = len(data)
  pos, offset, length = (8 if is_png else 2), -1, 0
  for _ in range(MAX_SEGMENTS):
    if pos + 8 > size:
      break
    head = data[pos : pos + 4].ljust(4, b"\0")
    if is_png:
      kind = data[pos + 4 : pos + 8]
      body = struct.unpack(">i", head)[0]  # The graph's int32: a length over 2**31 is negative.
      found = kind == png_kind
      stop = found or kind in (b"IDAT", b"IEND") or body < 0
      at, following = pos + 8, pos + 12 + body
    else:
      body = head[2] * 256 + head[3] - 2
      found = head[1] == jpeg_marker and data[pos + 4 : pos + 4 + len(jpeg_prefix)] == jpeg_prefix
      stop = found or head[0] != 0xFF or head[1] in (0xDA, 0xD9) or body < 0
      at, following = pos + 4, pos + 4 + body
    if found:
      offset, length = at, body
    if stop or following + 8 > size:
      break
    pos = following
  return offset, length


def exif_orientation(data: bytes, is_png: bool) -> int:
  """The EXIF orientation (1-8) of a PNG's eXIf chunk or a JPEG's EXIF APP1; 1 if none."""
  offset, length = segment(data, is_png, b"eXIf", 0xE1, b"Exif\0\0")
  if offset < 0:
    return 1
  exif = data[offset : offset + length]
  orientation = 1
  for marker in ORIENTATION_ENTRIES:
    at = exif.find(marker)
    if at >= 0:
      value = exif[at + len(marker)] if at + len(marker) < len(exif) else 0
      orientation = value if 1 <= value <= 8 else orientation
  return orientation


def polarity_strips(size: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
  """The rows and the column ranges (middle first, then the lungs') of the polarity check.

  Args:
    size: the square input's side, in pixels.

  Returns:
    ((first row, end row), [(first column, end column), ...]): Python slice bounds, the
    same in the serving graph and the lite path.
  """
  return _span(POLARITY_ROWS, size), [
    _span(fractions, size) for fractions in (POLARITY_CENTRE, *POLARITY_LUNGS)
  ]


def smoothness_span(size: int) -> tuple[int, int]:
  """The first and end row (and column) of the smoothness check's square, as slice bounds."""
  return _span(SMOOTHNESS_SPAN, size)


def _span(fractions: tuple[float, float], size: int) -> tuple[int, int]:
  """Fractions of a side as pixel slice bounds."""
  return tuple(int(round(f * size)) for f in fractions)
