"""The image codec: PNG checks without decoding, conversions to 8-bit gray, bad bytes."""

import struct
import zlib

from conftest import png_bytes as _png
import numpy as np
import pytest
import tensorflow as tf

from txr_data import image_codec


def _decoded(png: bytes) -> np.ndarray:
  return tf.io.decode_png(png).numpy()


def test_gray8_passes_through_unchanged():
  data = _png(
    np.arange(256, dtype=np.uint8).reshape(16, 16),
  )
  assert image_codec.normalise_png(data, "x.png") is data


def test_palette_rgb_rgba_and_16bit_convert_to_gray8():
  gray = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
  rgb = np.repeat(gray[..., None], 3, axis=-1)
  rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=-1)
  sources = {
    "palette": _png(gray, "P"),
    "rgb": _png(rgb),
    "rgba": _png(rgba),
    "16-bit": _png(gray.astype(np.uint16) * 257),
  }
  for name, data in sources.items():
    assert image_codec.png_info(data, name).is_gray8 is False, name
    out = _decoded(image_codec.normalise_png(data, name))
    assert out.shape == (20, 30, 1), name
    np.testing.assert_array_equal(out[..., 0], gray, err_msg=name)


def test_colour_rgb_uses_luma():
  rgb = np.zeros((4, 4, 3), np.uint8)
  rgb[..., 1] = 200
  out = _decoded(image_codec.normalise_png(_png(rgb), "c.png"))
  assert out.shape == (4, 4, 1) and abs(int(out[0, 0, 0]) - round(0.587 * 200)) <= 1


def test_resize_keeps_aspect_and_caps_longest_side():
  data = _png(
    np.full((300, 150), 100, np.uint8),
  )
  out = _decoded(image_codec.normalise_png(data, "r.png", max_side=100))
  assert out.shape == (100, 50, 1) and (out == 100).all()


@pytest.mark.parametrize(
  "data,message",
  [
    (b"", "empty"),
    (b"this is a readings file, not an image\n", "not a PNG"),
    (None, "truncated"),
  ],
)
def test_bad_bytes_are_named(data, message):
  if data is None:
    data = _png(
      np.zeros((50, 50), np.uint8),
    )[:-30]
  with pytest.raises(image_codec.BadImageError, match=f"bad.png: .*{message}"):
    image_codec.normalise_png(data, "bad.png")


def test_decompression_bomb_is_refused():
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

  header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
  data = image_codec.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IEND", b"")
  with pytest.raises(image_codec.BadImageError, match="bomb.png: refusing a 100000 x 100000"):
    image_codec.normalise_png(data, "bomb.png")
