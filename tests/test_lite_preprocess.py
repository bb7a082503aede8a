"""txr_lite.preprocess against the serving graph: the same pixels within a grey level, refusals."""

import io
import os
import struct
import subprocess
import sys
import zlib

from conftest import dicom_bytes
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from txr_lite import dicom as lite_dicom
from txr_lite import image_rules
from txr_lite import preprocess
from txr_model import decode
from txr_model import dicom as model_dicom
from txr_model import ood


def _chunk(kind, body):
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _after_ihdr(png: bytes, *chunks: bytes) -> bytes:
  return png[:33] + b"".join(chunks) + png[33:]


def _before_iend(png: bytes, chunk: bytes) -> bytes:
  return png[:-12] + chunk + png[-12:]


def _pil(array, fmt="PNG", mode=None, **kwargs) -> bytes:
  image = Image.fromarray(array)
  buf = io.BytesIO()
  (image.convert(mode) if mode else image).save(buf, format=fmt, **kwargs)
  return buf.getvalue()


def _png16(array) -> bytes:
  return tf.io.encode_png(array).numpy()  # Pillow writes no 16-bit colour.


def _film(height, width, seed=0):
  """A film-like gradient with noise: every resize step shows in it."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  return np.uint8((x * 2 + y + rng.integers(0, 20, (height, width))) % 256)


def _colour(height, width):
  film = _film(height, width).astype(np.int16)
  return np.uint8(np.clip(np.stack([film, film[::-1] // 2 + 60, 255 - film], -1), 0, 255))


def _exif_tiff(orientation: int, big_endian: bool) -> bytes:
  order = ">" if big_endian else "<"
  start = b"MM\x00\x2a" if big_endian else b"II\x2a\x00"
  entry = struct.pack(order + "IHHHIHH", 8, 1, 0x0112, 3, 1, orientation, 0)
  return start + entry + b"\0\0\0\0"


def _stored(upright, orientation):
  """How a camera stores an upright scene for an orientation tag."""
  return np.ascontiguousarray({
    1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
    5: upright.T, 6: np.rot90(upright, 1), 7: np.rot90(upright, 2).T, 8: np.rot90(upright, -1),
  }[orientation])  # fmt: skip


def _jpeg_exif(array, orientation, padding=0) -> bytes:
  exif = Image.Exif()
  exif[0x0112] = orientation
  data = _pil(array, "JPEG", quality=95, exif=exif.tobytes())
  segments = b"".join(
    b"\xff\xe2" + struct.pack(">H", 65002) + b"\0" * 65000 for _ in range(padding)
  )
  return data[:2] + segments + data[2:]


def _interlaced(image) -> bytes:
  passes = ((0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2),
            (0, 1, 1, 2))  # fmt: skip
  raw = b"".join(
    b"\0" + row.tobytes() for x0, dx, y0, dy in passes for row in image[y0::dy, x0::dx]
    if image[y0::dy, x0::dx].size
  )  # fmt: skip
  header = struct.pack(">IIBBBBB", image.shape[1], image.shape[0], 8, 0, 0, 0, 1)
  return (image_rules.PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
          + _chunk(b"IEND", b""))  # fmt: skip


def _valid_images() -> dict:
  film, medium = _film(90, 120), _film(613, 877, seed=1)  # 877 / 512 and / 300: not integers
  twelve = _film(170, 130).astype(np.uint16) * 16  # 0-4080
  sbit = _chunk(b"sBIT", b"\x0c")
  upright = _film(60, 100, seed=2)
  images = {
    "gray": _pil(film),
    "gray_medium": _pil(medium),
    "gray_tall": _pil(_film(700, 400, seed=3)),
    "gray_small": _pil(_film(40, 33)),  # Upsampled to the square
    "gray_alpha": _pil(np.stack([film, np.full_like(film, 200)], -1), mode="LA"),
    "one_bit": _pil(film > 128, mode="1"),
    "palette": _pil(_colour(90, 120), mode="P"),
    "palette_equal": _pil(np.repeat(medium[..., None], 3, -1), mode="P"),
    "rgb": _pil(_colour(300, 420)),
    "rgb_equal": _pil(np.repeat(medium[..., None], 3, -1)),
    "rgba": _pil(np.concatenate([_colour(90, 120), np.full((90, 120, 1), 9, np.uint8)], -1)),
    "interlaced": _interlaced(_film(137, 101)),
    "sixteen": _pil(medium.astype(np.uint16) * 257 + 3),
    "twelve_low": _pil(twelve),
    "twelve_low_sbit": _after_ihdr(_pil(twelve), sbit),
    "twelve_conformant": _after_ihdr(_pil(twelve << 4), sbit),
    "thirteen_saturated": _pil(np.minimum(twelve * 3, 8191)),  # 13 bits, not 14
    "dim_twelve_sbit": _after_ihdr(_pil(twelve // 2), sbit),  # 11-bit data, by 4095
    "sbit_in_text_only": _after_ihdr(_pil(twelve), _chunk(b"tEXt", b"Comment\0no sBIT here")),
    "sixteen_gray_alpha": _png16(np.stack([twelve, np.full_like(twelve, 65535)], -1)),
    # sBIT 12 for the colour channels and 16 for alpha: the colour bytes set the depth.
    "sixteen_gray_alpha_sbit": _after_ihdr(
      _png16(np.stack([twelve, np.full_like(twelve, 65535)], -1)), _chunk(b"sBIT", b"\x0c\x10")
    ),
    "sixteen_rgba_sbit": _after_ihdr(
      _png16(np.stack([twelve, twelve, twelve, np.full_like(twelve, 65535)], -1)),
      _chunk(b"sBIT", b"\x0c\x0c\x0c\x10"),
    ),
    "sixteen_rgb": _png16(_colour(170, 130).astype(np.uint16) * 200),
    "sixteen_rgb_equal": _png16(np.repeat(twelve[..., None], 3, -1)),
    # Taller than a band (preprocess._BAND_ROWS): the high and low bytes meet band by band.
    "sixteen_rgb_tall": _png16(_colour(520, 300).astype(np.uint16) * 199 + 5),
    "sixteen_gray_alpha_tall": _png16(
      np.stack(
        [_film(520, 300).astype(np.uint16) * 16 + 7, np.full((520, 300), 65535, np.uint16)], -1
      )
    ),
    "sixteen_rgba": _png16(
      np.concatenate(
        [np.stack([twelve, twelve // 2, twelve], -1), np.full((170, 130, 1), 65535, np.uint16)], -1
      )
    ),
    "jpeg_gray": _pil(medium, "JPEG", quality=95),
    "jpeg_gray_100": _pil(_film(300, 200), "JPEG", quality=100),
    "jpeg_colour": _pil(_colour(300, 420), "JPEG", quality=90),
    "jpeg_colour_444": _pil(_colour(300, 420), "JPEG", quality=90, subsampling=0),
    "jpeg_progressive": _pil(_colour(256, 256), "JPEG", quality=90, progressive=True),
    "jpeg_exif_6": _jpeg_exif(_stored(upright, 6), 6),
    "jpeg_exif_after_128_kb": _jpeg_exif(_stored(upright, 8), 8, padding=2),
    "png_exif_after_100_kb": _after_ihdr(
      _pil(_stored(upright, 6)),
      _chunk(b"zTXt", b"c\0\0" + b"\0" * 100_000),
      _chunk(b"eXIf", _exif_tiff(6, False)),
    ),
    # After IDAT (libpng allows it): past where every path looks, so scored as stored, alike.
    "png_exif_after_idat": _before_iend(_pil(upright), _chunk(b"eXIf", _exif_tiff(6, False))),
    "noise": _pil(np.random.default_rng(0).integers(0, 256, (200, 200)).astype(np.uint8)),
    "gray_trns": _after_ihdr(_pil(film), _chunk(b"tRNS", b"\0\x10")),
    "bad_text_crc": _after_ihdr(
      _pil(film), _chunk(b"tEXt", b"a\0b")[:-1] + b"?"
    ),  # libpng: ignored
    "after_iend": _pil(film) + b"garbage",
    "cmyk_jpeg": _pil(_colour(90, 120), "JPEG", mode="CMYK", quality=90),
  }
  for orientation in range(1, 9):
    for big in (True, False):
      name = f"png_exif_{orientation}_{'mm' if big else 'ii'}"
      exif = _chunk(b"eXIf", _exif_tiff(orientation, big))
      images[name] = _after_ihdr(_pil(_stored(upright, orientation)), exif)
  return images


def _refused_images() -> dict:
  good = _pil(_film(90, 120))
  zero_width = bytearray(good)
  zero_width[16:20] = bytes(4)
  bomb = (
    image_rules.PNG_SIGNATURE
    + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
    + _chunk(b"IDAT", zlib.compress(b"\0" * 20001 * 50))
    + _chunk(b"IEND", b"")
  )
  jpeg = _pil(_film(90, 120), "JPEG")
  jpeg_bomb = bytearray(jpeg)
  sof = jpeg_bomb.index(b"\xff\xc0")
  jpeg_bomb[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
  progressive = _pil(_film(256, 256), "JPEG", quality=90, progressive=True)
  last = progressive.rindex(b"\xff\xda")
  scan_bomb = progressive[:-2] + progressive[last:-2] * 200 + progressive[-2:]
  y, x = np.mgrid[0:200, 0:200]
  rows = _film(90, 120)  # a complete zlib stream of 45 of the 90 rows the header declares
  half = (
    image_rules.PNG_SIGNATURE
    + _chunk(b"IHDR", struct.pack(">IIBBBBB", 120, 90, 8, 0, 0, 0, 0))
    + _chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row.tobytes() for row in rows[:45])))
    + _chunk(b"IEND", b"")
  )
  no_palette = (  # a palette image whose PLTE chunk is missing: libpng refuses it
    image_rules.PNG_SIGNATURE
    + _chunk(b"IHDR", struct.pack(">IIBBBBB", 120, 90, 8, 3, 0, 0, 0))
    + _chunk(b"IDAT", zlib.compress(b"".join(b"\0" + (row % 7).tobytes() for row in rows)))
    + _chunk(b"IEND", b"")
  )
  crc = len(good) - 16  # The last IDAT CRC's first byte: IEND follows.
  cuts = {f"png_cut_{k}": (good[: len(good) * k // 6], "decode") for k in range(1, 6)}
  cuts |= {f"jpeg_cut_{k}": (jpeg[: len(jpeg) * k // 6], "decode") for k in range(1, 6)}
  return (
    cuts
    | {
      "bad_idat_crc": (good[:crc] + bytes([good[crc] ^ 1]) + good[crc + 1 :], "decode"),
      "no_iend": (good[:-12], "decode"),
      "signature_only": (image_rules.PNG_SIGNATURE, "format"),
      "jpeg_signature_only": (image_rules.JPEG_SIGNATURE, "decode"),
      "empty": ("", "empty"),
      "garbage": (b"garbage", "format"),
      "gif": (_pil(_film(90, 120), "GIF"), "format"),
      "bmp": (_pil(_film(90, 120), "BMP"), "format"),
      "truncated_png": (good[: len(good) // 2], "decode"),
      "corrupt_zlib": (good[:41] + b"\x00" * 20 + good[61:], "decode"),
      "half_the_rows": (half, "decode"),  # Pillow alone filled the other half in
      "palette_without_plte": (no_palette, "decode"),  # Pillow used a default palette
      "jpeg_garbage": (b"\xff\xd8\xff\xe0 not really a jpeg", "decode"),
      "truncated_jpeg": (jpeg[: len(jpeg) * 2 // 3], "decode"),
      "png_bomb": (bomb, "too_large"),
      "jpeg_bomb": (bytes(jpeg_bomb), "too_large"),
      "scan_bomb": (scan_bomb, "scans"),
      "one_pixel": (_pil(np.full((1, 1), 128, np.uint8)), "too_small"),
      "side_31": (_pil(_film(31, 100)), "too_small"),
      "zero_width": (bytes(zero_width), "no_pixels"),
      "elongated": (_pil(_film(20000, 10)), "aspect"),
      "wide": (_pil(_film(40, 161)), "aspect"),
      "uniform": (_pil(np.full((200, 200), 128, np.uint8)), "blank"),
      "uniform_jpeg": (_pil(np.full((200, 200), 90, np.uint8), "JPEG"), "blank"),
      "speck": (_pil(np.where((y == 100) & (x == 100), 255, 128).astype(np.uint8)), "blank"),
    }
  )


@pytest.fixture(scope="module")
def images():
  return _valid_images(), _refused_images()


@pytest.mark.parametrize("image_size,max_side", [(75, 512), (299, 300), (299, None)])
def test_lite_preprocessing_gives_the_serving_graphs_pixels_and_refusals(
  images, image_size, max_side
):
  valid, refused = images
  names = list(valid) + list(refused)
  data = list(valid.values()) + [d for d, _ in refused.values()]
  graph, colourfulness, aspect, error = decode.decode_batch(tf.constant(data), image_size, max_side)
  graph, error = graph.numpy(), [e.decode() for e in error.numpy()]
  worst = {}
  for i, name in enumerate(names):
    expected_error = image_rules.ERRORS[refused[name][1]] if name in refused else ""
    assert error[i] == expected_error, name
    if expected_error:
      with pytest.raises(ValueError) as raised:
        preprocess.prepare(data[i], image_size, max_side)
      assert str(raised.value) == expected_error, name
      continue
    lite = preprocess.prepare(data[i], image_size, max_side)
    assert lite.image.shape == (image_size, image_size, 1) and lite.image.dtype == np.uint8
    worst[name] = np.abs(lite.image.astype(int) - graph[i]).max()
    assert lite.colourfulness == pytest.approx(float(colourfulness[i]), rel=1e-4, abs=1e-3), name
    assert lite.aspect == pytest.approx(float(aspect[i]), rel=1e-6), name
    served_polarity = float(ood.polarity(graph[i : i + 1])[0])  # pixels within 1 grey level
    assert lite.polarity == pytest.approx(served_polarity, abs=1.0), name
    served_smoothness = float(ood.smoothness(graph[i : i + 1])[0])
    assert lite.smoothness == pytest.approx(served_smoothness, abs=0.02), name
  assert max(worst.values()) <= 1, {k: v for k, v in worst.items() if v > 1}


def test_films_have_a_bright_middle_and_their_negatives_a_dark_one_and_noise_no_grain():
  """The polarity and smoothness checks' margins on every film of both samples, noise, ramps."""
  import glob

  import txr_data

  paths = sorted(glob.glob(os.path.join(txr_data.SAMPLE_DIR, "**", "*.png"), recursive=True))
  paths += sorted(glob.glob(os.path.join(txr_data.MONTGOMERY_SAMPLE_DIR, "**", "CXR_png", "*.png"),
                            recursive=True))  # fmt: skip
  assert len(paths) == 84
  for size in (32, 75, 299):
    films = np.stack([preprocess.prepare(open(p, "rb").read(), size, 512).image for p in paths])
    for images, sign in ((films, 1), (255 - films, -1)):
      lite = np.array([preprocess.polarity_of(image[..., 0]) for image in images])
      np.testing.assert_allclose(ood.polarity(images).numpy(), lite, atol=1e-3)
      assert (sign * lite > 50).all() and (sign * lite > -image_rules.MIN_POLARITY).all()
    smooth = np.array([preprocess.smoothness_of(image[..., 0]) for image in films])
    np.testing.assert_allclose(ood.smoothness(films).numpy(), smooth, atol=1e-4)
    assert (smooth > image_rules.MIN_SMOOTHNESS + 0.15).all(), (size, smooth.min())
    noise = np.random.default_rng(size).integers(0, 256, (512, 512), np.uint8)
    assert preprocess.prepare_array(noise, size, 512).smoothness < image_rules.MIN_SMOOTHNESS
    # Smooth garbage: its sides' mean polarity is about 0; the brighter side's is not.
    y, x = np.mgrid[0:512, 0:512]
    for garbage in ((x + y) // 4, x // 2, 255 - x // 2):
      square = preprocess.prepare_array(garbage.astype(np.uint8), size, 512).image
      lite = preprocess.polarity_of(square[..., 0])
      assert lite == pytest.approx(float(ood.polarity(square[None])[0]), abs=1e-3)
      assert lite < image_rules.MIN_POLARITY, (size, lite)


def test_a_dicom_gets_the_serving_graphs_pixels_without_a_png():
  pixels = _film(613, 877, seed=4).astype(np.uint16) * 16  # 12-bit, as dicom_bytes declares
  data = dicom_bytes(pixels)
  png = model_dicom.to_png(data, image_rules.MAX_PIXELS)
  graph, _, aspect, error = decode.decode_batch(tf.constant([png]), 299, 512)
  lite = preprocess.prepare_array(lite_dicom.to_gray(data), 299, 512)
  assert error.numpy()[0] == b"" and lite.aspect == pytest.approx(float(aspect[0]))
  assert np.abs(lite.image.astype(int) - graph[0].numpy()).max() <= 1
  assert lite.colourfulness == 0
  with pytest.raises(ValueError, match="too small"):
    preprocess.prepare_array(np.zeros((20, 40), np.uint8), 299, None)
  with pytest.raises(ValueError, match="no contrast"):
    preprocess.prepare_array(np.zeros((200, 200), np.uint8), 299, None)
  with pytest.raises(TypeError):
    preprocess.prepare_array(pixels, 299, None)


def test_txr_lite_imports_no_tensorflow():
  code = (
    "import sys, txr_lite.preprocess, txr_lite.dicom; "
    "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": root}
  subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


PEAK = """
import sys
from txr_lite import preprocess

def peak_kib():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark from here
before = peak_kib()
preprocess.prepare(data, 75, 512)
print((peak_kib() - before) * 1024 / 3000**2)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux's /proc")
@pytest.mark.parametrize("kind, bound", [("gray", 7.0), ("rgb", 18.5)])
def test_a_16_bit_film_is_decoded_without_holding_every_copy_of_its_pixels_at_once(
  tmp_path, kind, bound
):
  """Peak memory of one prepare over the process before it, file read, in bytes a pixel.

  16-bit gray (2 bytes of pixels): 8.2 before this release's banded decoding
  (np.asarray's tobytes held two copies besides Pillow's, and the checked PNG a
  fourth), 6.1 after. 16-bit RGB (6 bytes), which Pillow reads as two 8-bit
  images, high bytes then low: 20.2 while each went whole through numpy, 17.2
  now that both go into the uint16 values a band at a time.
  """
  rng = np.random.default_rng(0)
  film = (2000 + rng.normal(0, 300, (3000, 3000))).clip(0, 4095).astype(np.uint16)
  path = tmp_path / "film.png"
  if kind == "rgb":
    path.write_bytes(_png16(np.stack([film, film ^ 16, film], -1)))
  else:
    Image.fromarray(film).save(path)  # noisy: its file is 1.6 bytes a pixel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": root}
  out = subprocess.run(
    [sys.executable, "-c", PEAK, str(path)], check=True, env=env, cwd=root,
    capture_output=True, text=True,
  )  # fmt: skip
  assert float(out.stdout) <= bound, out.stdout
