"""The image codec: PNG checks without decoding, conversions to 8-bit gray, bad bytes."""

import struct
import zlib

from conftest import png_bytes as _png
from conftest import png_with_exif
import numpy as np
import pytest
import tensorflow as tf

from txr_data import geometry
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


def _chunk(kind, body):
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_idat(png: bytes, idat: bytes) -> bytes:
  """`png` with its image data replaced by `idat`, every CRC valid."""
  start = png.index(b"IDAT") - 4
  end = png.index(b"IEND") - 4
  return png[:start] + _chunk(b"IDAT", idat) + png[end:]


@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_corrupt_zlib_stream_with_valid_crcs_is_refused(damage):
  image = np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint8)
  png = _png(image)
  idat = zlib.compress(b"\0" + b"\0".join(image[i].tobytes() for i in range(40)))
  assert image_codec.png_info(_with_idat(png, idat), "ok.png").is_gray8
  bad = b"\x78\x9c" + bytes(range(200)) if damage == "garbage" else idat[: len(idat) // 2]
  with pytest.raises(image_codec.BadImageError, match="z.png: corrupt PNG image data"):
    image_codec.normalise_png(_with_idat(png, bad), "z.png")


def test_interlaced_png_passes_the_data_check_and_decodes():
  image = np.random.default_rng(2).integers(0, 256, (37, 29), dtype=np.uint8)
  passes = ((0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
            (0, 1, 1, 2))  # fmt: skip
  raw = b"".join(
    b"\0" + row.tobytes() for x0, dx, y0, dy in passes for row in image[y0::dy, x0::dx]
    if image[y0::dy, x0::dx].size
  )  # fmt: skip
  header = struct.pack(">IIBBBBB", 29, 37, 8, 0, 0, 0, 1)
  png = (image_codec.PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
         + _chunk(b"IEND", b""))  # fmt: skip
  info = image_codec.png_info(png, "i.png")
  assert info.interlace == 1 and info.is_gray8
  np.testing.assert_array_equal(_decoded(png)[..., 0], image)


def _twelve_bit(values: np.ndarray, sbit: bool) -> bytes:
  png = _png(values.astype(np.uint16))
  if sbit:  # sBIT goes right after IHDR (8 + 25 bytes).
    png = png[:33] + _chunk(b"sBIT", b"\x0c") + png[33:]
  return png


@pytest.mark.parametrize("sbit", [True, False])
def test_twelve_bit_data_in_16_bit_png_scales_by_its_real_depth(sbit):
  values = np.linspace(0, 4095 if sbit else 3000, 30 * 40).reshape(30, 40)
  png = _twelve_bit(values, sbit)
  assert image_codec.png_info(png, "m.png").significant_bits == (12 if sbit else 0)
  out = _decoded(image_codec.normalise_png(png, "m.png"))[..., 0].astype(float)
  # By 4095 either way (3000 needs 12 bits), not by 65535, which leaves it black.
  expected = np.round(values.astype(np.uint16).astype(float) * 255 / 4095)
  np.testing.assert_allclose(out, expected, atol=0.5)


@pytest.mark.parametrize("shift", [4, "linear"])
def test_png_conformant_twelve_bit_data_scaled_up_with_sbit_is_not_read_white(shift):
  # PNG 1.2 section 9.1: a conformant encoder scales 12-bit samples up to 16
  # bits (a left shift or linear scaling) and records sBIT 12.
  values = np.linspace(0, 4095, 30 * 40).reshape(30, 40).astype(np.uint16)
  scaled = (
    values << 4 if shift == 4 else np.round(values.astype(float) * 65535 / 4095).astype(np.uint16)
  )
  png = _png(scaled)
  png = png[:33] + _chunk(b"sBIT", b"\x0c") + png[33:]
  out = _decoded(image_codec.normalise_png(png, "m.png"))[..., 0].astype(float)
  np.testing.assert_allclose(out, np.round(values.astype(float) * 255 / 4095), atol=1.01)


@pytest.mark.parametrize("channels", [2, 4])
def test_16_bit_gray_alpha_and_rgba_are_scaled_by_their_data_not_their_alpha(channels):
  values = np.linspace(0, 4095, 30 * 40).reshape(30, 40, 1).astype(np.uint16)
  alpha = np.full_like(values, 65535)  # Opaque: it set the depth to 16 bits, leaving it black.
  pixels = np.concatenate([values] * (channels - 1) + [alpha], -1)
  png = tf.io.encode_png(pixels).numpy()
  out = _decoded(image_codec.normalise_png(png, "a.png"))[..., 0].astype(float)
  np.testing.assert_allclose(out, np.round(values[..., 0] * 255.0 / 4095), atol=0.5)


@pytest.mark.parametrize("channels", [2, 4])
def test_sbit_of_gray_alpha_and_rgba_is_read_from_the_colour_bytes_never_alpha(channels):
  """Low-aligned 12-bit data, sBIT 12 per colour channel and 16 for alpha (issue 25)."""
  values = np.linspace(0, 4095, 30 * 40).reshape(30, 40, 1).astype(np.uint16)
  pixels = np.concatenate([values] * (channels - 1) + [np.full_like(values, 65535)], -1)
  png = tf.io.encode_png(pixels).numpy()
  sbit = b"\x0c" * (1 if channels == 2 else 3) + b"\x10"
  png = png[:33] + _chunk(b"sBIT", sbit) + png[33:]
  assert image_codec.png_info(png, "a.png").significant_bits == 12  # alpha's 16 not taken
  out = _decoded(image_codec.normalise_png(png, "a.png"))[..., 0].astype(float)
  np.testing.assert_allclose(out, np.round(values[..., 0] * 255.0 / 4095), atol=0.5)


def _header_only(width, height, depth, colour):
  header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
  return image_codec.PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def test_conversion_memory_is_capped_by_bytes_not_only_pixels():
  # 100 Mpx of 16-bit RGBA took about 7.8 GB to convert; 8-bit gray far less. Headers only.
  rgba16 = image_codec.PngInfo(10_000, 10_000, 16, 6)
  gray8 = image_codec.PngInfo(10_000, 10_000, 8, 0)
  cap = image_codec.MAX_DECODE_BYTES
  assert image_codec.decode_bytes(rgba16) > cap >= image_codec.decode_bytes(gray8)
  with pytest.raises(image_codec.BadImageError, match=r"big.png: .* needs about 5.6 GiB"):
    image_codec.png_info(_header_only(10_000, 10_000, 16, 6), "big.png")
  with pytest.raises(image_codec.BadImageError, match="big.png: corrupt PNG image data"):
    image_codec.png_info(_header_only(10_000, 10_000, 8, 0), "big.png")  # Past the cap.
  # A real radiograph's worst case, 4900 x 4900 in RGBA, fits.
  assert image_codec.decode_bytes(image_codec.PngInfo(4900, 4900, 8, 6)) < cap


def test_elongated_images_are_refused_by_name():
  with pytest.raises(image_codec.BadImageError, match="e.png: refusing a 10 x 20000 image: a"):
    image_codec.normalise_png(_png(np.zeros((20000, 10), np.uint8)), "e.png", 512)
  assert _decoded(image_codec.normalise_png(_png(np.zeros((400, 100), np.uint8)), "ok.png")).shape


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("order", ["II", "MM"])
def test_exif_orientation_is_applied_as_serving_applies_it(orientation, order):
  from txr_model import decode  # Serving's reading of the same bytes.

  image = np.random.default_rng(3).integers(0, 256, (20, 30, 1), dtype=np.uint8)
  png = png_with_exif(_png(image[..., 0]), orientation, order)
  assert image_codec.png_info(png, "o.png").orientation == orientation
  served = geometry.orient(
    tf.constant(image), decode._orientation(tf.constant(png), tf.constant(True))
  )
  np.testing.assert_array_equal(_decoded(image_codec.normalise_png(png, "o.png")), served)
  if orientation in (5, 6, 7, 8):
    assert served.shape == (30, 20, 1)


def test_the_builder_reads_exif_orientation_as_serving_and_the_lite_path_do():
  """One reader of one fact (issue 25): the builder used to parse IFD0 itself, and an EXIF
  block whose IFD offset points past its end gave 1 there but 6 in serving and txr-predict-lite
  (both find the Orientation entry in the block): training and serving rotated differently."""
  from txr_lite import image_rules
  from txr_model import decode

  image = np.random.default_rng(4).integers(0, 256, (20, 30), dtype=np.uint8)
  entry = struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)  # Orientation 6, little-endian
  tiff = b"II*\0" + struct.pack("<I", 9999) + struct.pack("<H", 1) + entry
  png = _png(image)
  png = png[:33] + _chunk(b"eXIf", tiff) + png[33:]
  served = int(decode._orientation(tf.constant(png), tf.constant(True)))
  assert served == image_rules.exif_orientation(png, True) == 6
  assert image_codec.png_info(png, "o.png").orientation == served
