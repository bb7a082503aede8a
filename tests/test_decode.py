"""The serving graph's decoding: per-element errors, limits before decoding, like training."""

import io
import resource
import struct
import zlib

from conftest import png_bytes as _png
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from txr_data import geometry
from txr_data import image_codec
from txr_model import decode

SIZE = 75


@pytest.fixture(scope="module")
def decode_fn():
  return tf.function(lambda b: decode.decode_batch(b, SIZE, 512))


def _film(height=90, width=120, seed=0):
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  return np.uint8((x * 2 + y + rng.integers(0, 20, (height, width))) % 256)


def _pil(array, fmt, **kwargs) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _chunk(kind, body):
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _expected(png: bytes) -> np.ndarray:
  """What training feeds the model for this source: the builder's, then the pipeline's."""
  stored = image_codec.normalise_png(png, "x.png", 512)
  return geometry.resize_to_square(tf.io.decode_png(stored, channels=1), SIZE).numpy()


def test_one_bad_element_never_fails_the_batch(decode_fn):
  film = _film()
  good = _png(film)
  batch = {
    "good": good,
    "garbage": b"garbage",
    "empty": b"",
    "truncated": good[: len(good) // 2],
    "zlib": good[:41] + b"\x00" * 20 + good[61:],  # CRCs now wrong, stream corrupt
    "jpeg_garbage": b"\xff\xd8\xff\xe0 not really a jpeg",
    "gif": _pil(film, "GIF"),
    "bmp": _pil(film, "BMP"),
    "webp": _pil(np.repeat(film[..., None], 3, -1), "WEBP"),
    "jpeg": tf.io.encode_jpeg(film[..., None], quality=100).numpy(),
  }
  images, _, aspect, error = decode_fn(tf.constant(list(batch.values())))
  errors = dict(zip(batch, (e.decode() for e in error.numpy()), strict=True))
  assert errors["good"] == errors["jpeg"] == ""
  assert errors["empty"] == decode.ERRORS["empty"]
  for name in ("garbage", "gif", "bmp", "webp"):  # What txr-predict refuses, the graph refuses.
    assert errors[name] == decode.ERRORS["format"], name
  for name in ("truncated", "zlib", "jpeg_garbage"):
    assert errors[name] == decode.ERRORS["decode"], name
  np.testing.assert_array_equal(images[0].numpy(), _expected(good))
  assert np.abs(images[-1].numpy().astype(int) - _expected(good)).mean() < 3  # JPEG is lossy
  assert (images[1:-1].numpy() == 0).all() and float(aspect[0]) == pytest.approx(120 / 90)


def test_huge_images_are_refused_from_the_header_without_decoding(decode_fn):
  # 20000 x 20000 zeros compress to about 400 KB; the header alone says 400 Mpx.
  row = b"\0" * 20001
  body = zlib.compress(row * 200)  # Only the first rows: never inflated anyway.
  header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
  bomb = image_codec.PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body)
  bomb += _chunk(b"IEND", b"")
  jpeg_bomb = bytearray(tf.io.encode_jpeg(np.zeros((8, 8, 1), np.uint8)).numpy())
  sof = jpeg_bomb.index(b"\xff\xc0")
  jpeg_bomb[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width in the SOF
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  _, _, _, error = decode_fn(tf.constant([bomb, bytes(jpeg_bomb), _png(_film())]))
  grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
  assert [e.decode() for e in error.numpy()] == [decode.ERRORS["too_large"]] * 2 + [""]
  assert grown_mb < 300, grown_mb  # Decoding either would take gigabytes.


def _exif_png(array, orientation: int, big_endian: bool) -> bytes:
  """A PNG with an eXIf chunk (TIFF header + one IFD entry: Orientation)."""
  if big_endian:
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">HHHIHH", 1, 0x0112, 3, 1,
                                                              orientation, 0)  # fmt: skip
  else:
    tiff = b"II\x2a\x00" + struct.pack("<I", 8) + struct.pack("<HHHIHH", 1, 0x0112, 3, 1,
                                                              orientation, 0)  # fmt: skip
  png = _png(array)
  return png[:33] + _chunk(b"eXIf", tiff + b"\0\0\0\0") + png[33:]


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(decode_fn, orientation):
  upright = _film(60, 100)
  # How a camera stores an upright scene for each tag (the inverse of what the tag asks).
  stored = {
    1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
    5: upright.T, 6: np.rot90(upright, 1), 7: np.rot90(upright, 2).T, 8: np.rot90(upright, -1),
  }[orientation]  # fmt: skip
  data = [_exif_png(stored, orientation, big_endian=b) for b in (True, False)]
  images, _, aspect, error = decode_fn(tf.constant(data))
  assert list(error.numpy()) == [b"", b""]
  for image in images.numpy():
    np.testing.assert_array_equal(image, _expected(_png(upright)))
  assert aspect.numpy() == pytest.approx([100 / 60] * 2)


def test_exif_orientation_in_a_jpeg(decode_fn):
  upright = _film(60, 100)
  exif = Image.Exif()
  exif[0x0112] = 6
  data = _pil(np.ascontiguousarray(np.rot90(upright, 1)), "JPEG", quality=100, exif=exif.tobytes())
  images, _, aspect, error = decode_fn(tf.constant([data]))
  assert error.numpy()[0] == b"" and aspect.numpy()[0] == pytest.approx(100 / 60)
  assert np.abs(images[0].numpy().astype(int) - _expected(_png(upright))).mean() < 2


@pytest.mark.parametrize("sbit", [True, False])
def test_twelve_bit_png_is_scaled_by_its_real_depth(decode_fn, sbit):
  values = (_film().astype(np.uint16) * 16).astype(np.uint16)  # 12-bit data: max 4080
  png = _png(values)
  if sbit:
    png = png[:33] + _chunk(b"sBIT", b"\x0c") + png[33:]
  images, _, _, error = decode_fn(tf.constant([png]))
  assert error.numpy()[0] == b""
  np.testing.assert_array_equal(images[0].numpy(), _expected(png))
  assert images.numpy().max() > 200  # Not 15, as scaling by 1/257 gives.


def test_a_big_film_decodes_as_builder_plus_pipeline(decode_fn):
  film = np.uint8(np.clip(_film(3000, 2400, seed=3).astype(float) * 0.8 + 20, 0, 255))
  png = _png(film)
  images, _, _, error = decode_fn(tf.constant([png]))
  assert error.numpy()[0] == b""
  difference = np.abs(images[0].numpy().astype(int) - _expected(png))
  assert difference.max() <= 1, difference.max()  # Area-shrunk to 512 first, as in the builder.


def _with_chunks(png: bytes, *chunks: bytes) -> bytes:
  """`png` with chunks inserted right after IHDR."""
  return png[:33] + b"".join(chunks) + png[33:]


@pytest.mark.parametrize(
  "case", ["conformant", "low_aligned", "low_aligned_with_sbit", "text_mentions_sbit"]
)
def test_sbit_is_read_from_its_chunk_not_found_by_a_byte_search(decode_fn, case):
  film = _film().astype(np.uint16) * 16  # 12-bit data: 0-4080
  sbit = _chunk(b"sBIT", b"\x0c")
  png = {
    "conformant": _with_chunks(_png(film << 4), sbit),  # PNG 1.2: scaled up to 16 bits
    "low_aligned": _png(film),
    "low_aligned_with_sbit": _with_chunks(_png(film), sbit),
    # The byte after 'sBIT' here (' ') is no depth: the file has no sBIT chunk.
    "text_mentions_sbit": _with_chunks(_png(film), _chunk(b"tEXt", b"Comment\0no sBIT here")),
  }[case]
  images, _, _, error = decode_fn(tf.constant([png]))
  assert error.numpy()[0] == b""
  np.testing.assert_array_equal(images[0].numpy(), _expected(png))  # As the builder reads it.
  assert 200 < images.numpy().max() < 255 or case == "conformant"  # Not black, not white.


@pytest.mark.parametrize("channels", [2, 4])
def test_sbit_of_gray_alpha_and_rgba_counts_the_colour_bytes_never_alpha(decode_fn, channels):
  """12-bit gray+alpha or RGBA, low-aligned, sBIT 12 per colour and 16 for alpha (issue 25)."""
  film = (_film().astype(np.uint16) * 16)[..., None]  # 12-bit data: 0-4080
  pixels = np.concatenate([film] * (channels - 1) + [np.full_like(film, 65535)], -1)
  sbit = _chunk(b"sBIT", b"\x0c" * (1 if channels == 2 else 3) + b"\x10")
  png = _with_chunks(tf.io.encode_png(pixels).numpy(), sbit)
  images, _, _, error = decode_fn(tf.constant([png]))
  assert error.numpy()[0] == b""
  np.testing.assert_array_equal(images[0].numpy(), _expected(png))  # As the builder reads it.
  assert images.numpy().max() > 200  # Not near-black, as alpha's depth (16) made it.


@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_is_reduced_to_gray_as_the_builder_reduces_it(decode_fn, channels):
  """The builder let libpng reduce 16-bit colour (Rec. 709 weights); serving uses TF's luma."""
  film = _film().astype(np.uint16) * 257
  rgb = np.stack([film, film // 2, 65535 - film], -1)  # unequal channels: luma decides
  pixels = rgb if channels == 3 else np.concatenate([rgb, np.full_like(film, 65535)[..., None]], -1)
  png = tf.io.encode_png(pixels).numpy()
  images, _, _, error = decode_fn(tf.constant([png]))
  assert error.numpy()[0] == b""
  difference = np.abs(images[0].numpy().astype(int) - _expected(png))
  assert difference.max() <= 1, difference.max()  # As the builder reads it.


def _jpeg_with_segments_first(data: bytes, size: int) -> bytes:
  """`data` (a JPEG) with `size` bytes of APP2 segments (ICC-like) right after SOI."""
  segments = b""
  while size > 0:
    body = b"\0" * min(size, 65000)
    segments += b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body
    size -= len(body)
  return data[:2] + segments + data[2:]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_exif_after_64_kb_of_other_metadata_is_found(decode_fn, fmt):
  upright = _film(60, 100)
  stored = np.ascontiguousarray(np.rot90(upright, 1))  # Orientation 6
  if fmt == "jpeg":
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _pil(stored, "JPEG", quality=100, exif=exif.tobytes())
    data = _jpeg_with_segments_first(data, 100_000)
  else:
    data = _exif_png(stored, 6, big_endian=False)
    data = _with_chunks(data[:33], _chunk(b"zTXt", b"c\0\0" + b"\0" * 100_000)) + data[33:]
  images, _, aspect, error = decode_fn(tf.constant([data]))
  assert error.numpy()[0] == b"" and aspect.numpy()[0] == pytest.approx(100 / 60)
  assert np.abs(images[0].numpy().astype(int) - _expected(_png(upright))).mean() < 2


def _progressive_jpeg(array, extra_scans: int) -> bytes:
  """A progressive JPEG, its last scan repeated `extra_scans` times (a scan bomb when many)."""
  data = _pil(array, "JPEG", quality=90, progressive=True)
  last = data.rindex(b"\xff\xda")
  scan = data[last:-2]  # SOS header and entropy data, up to EOI
  return data[:-2] + scan * extra_scans + data[-2:]


def test_progressive_jpeg_scan_bombs_are_refused_before_decoding(decode_fn):
  film = _film(256, 256)
  ordinary = _progressive_jpeg(film, 0)
  assert 1 < ordinary.count(b"\xff\xda") <= decode.MAX_JPEG_SCANS
  bomb = _progressive_jpeg(film, 5000)  # About 1 MB; minutes of decoding per element.
  _, _, _, error = decode_fn(tf.constant([ordinary, bomb]))
  assert [e.decode() for e in error.numpy()] == ["", decode.ERRORS["scans"]]


def test_images_without_content_are_refused_by_name(decode_fn):
  zero_width = bytearray(_png(_film()))
  zero_width[16:20] = bytes(4)  # IHDR width 0 (CRC now wrong; never decoded)
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:200, 0:200]
  batch = {
    "one_pixel": _png(np.full((1, 1), 128, np.uint8)),
    "two_pixels": _png(np.full((2, 2), 128, np.uint8)),
    "uniform": _png(np.full((200, 200), 128, np.uint8)),
    "uniform_jpeg": tf.io.encode_jpeg(np.full((200, 200, 1), 90, np.uint8)).numpy(),
    "speck": _png(np.where((y == 100) & (x == 100), 255, 128).astype(np.uint8)),
    "zero_width": bytes(zero_width),
    "elongated": _png(_film(20000, 10)),
    "noise": _png(rng.integers(0, 256, (200, 200)).astype(np.uint8)),  # For the OOD detector
    "gradient": _png(np.uint8(x + y) // 2),
    "film": _png(_film()),
  }
  _, _, _, error = decode_fn(tf.constant(list(batch.values())))
  errors = dict(zip(batch, (e.decode() for e in error.numpy()), strict=True))
  assert errors == {
    "one_pixel": decode.ERRORS["too_small"],
    "two_pixels": decode.ERRORS["too_small"],
    "uniform": decode.ERRORS["blank"],
    "uniform_jpeg": decode.ERRORS["blank"],
    "speck": decode.ERRORS["blank"],
    "zero_width": decode.ERRORS["no_pixels"],
    "elongated": decode.ERRORS["aspect"],
    "noise": "",
    "gradient": "",
    "film": "",
  }
