"""The input rules every reader shares: PNG sample counts and image-data sizes."""

import io
import zlib

import numpy as np
from PIL import Image
import pytest

from txr_lite import image_rules


def test_colour_samples_leave_alpha_out():
  # Gray, RGB, palette, gray+alpha, RGBA: sBIT's colour bytes come first, alpha's last.
  assert [image_rules.colour_samples(t) for t in (0, 2, 3, 4, 6)] == [1, 3, 3, 1, 3]


def _idat(png: bytes) -> list[bytes]:
  """The bodies of a PNG's IDAT chunks, in order."""
  bodies, at = [], 8
  while at < len(png):
    length = int.from_bytes(png[at : at + 4], "big")
    if png[at + 4 : at + 8] == b"IDAT":
      bodies.append(png[at + 8 : at + 8 + length])
    at += 12 + length
  return bodies


@pytest.mark.parametrize(
  "mode, colour_type, bit_depth",
  [("L", 0, 8), ("RGB", 2, 8), ("RGBA", 6, 8), ("LA", 4, 8), ("I;16", 0, 16), ("1", 0, 1)],
)
def test_image_data_size_is_what_an_encoder_writes(mode, colour_type, bit_depth):
  rng = np.random.default_rng(0)
  image = Image.fromarray(rng.integers(0, 255, (37, 29), np.uint8)).convert(mode)
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  inflated = zlib.decompress(b"".join(_idat(buf.getvalue())))
  assert len(inflated) == image_rules.png_image_data_bytes(29, 37, bit_depth, colour_type, 0)


def test_interlaced_image_data_counts_each_adam7_pass():
  # 8 x 8 gray: 64 pixel bytes and a filter byte per pass row (1+1+1+2+2+4+4 rows).
  assert image_rules.png_image_data_bytes(8, 8, 8, 0, 1) == 64 + 15
  # 1 x 1: only the first pass has a pixel; RGB 16-bit: 6 bytes a pixel.
  assert image_rules.png_image_data_bytes(1, 1, 16, 2, 1) == 1 + 6


def test_inflate_stops_past_the_expected_and_says_if_the_stream_ended():
  data = bytes(range(256)) * 40
  stream = zlib.compress(data)
  assert image_rules.inflate([stream], len(data)) == (data, True)
  assert image_rules.inflate([stream[:10], stream[10:]], 100) == (data[:101], False)  # capped
  short = zlib.compress(data[:500])  # complete, but fewer rows than declared
  assert image_rules.inflate([short], len(data)) == (data[:500], True)
  with pytest.raises(zlib.error):
    image_rules.inflate([b"not zlib"], 10)
