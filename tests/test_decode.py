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

from txr_data import image_codec
from txr_model import decode
from txr_model import input_pipeline

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
  return input_pipeline.resize_to_square(tf.io.decode_png(stored, channels=1), SIZE).numpy()


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
