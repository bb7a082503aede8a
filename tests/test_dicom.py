"""DICOM -> PNG for txr-predict: LUTs, MONOCHROME1, limits, and a clear message without pydicom."""

import builtins
import io

from conftest import dicom_bytes
import numpy as np
from pydicom.dataset import Dataset
import pytest
import tensorflow as tf

from txr_model import dicom
from txr_model import predict

RAMP = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (48, 1))


def _gray(png: bytes) -> np.ndarray:
  return tf.io.decode_png(png).numpy()[..., 0].astype(int)


def test_monochrome2_is_scaled_by_its_stored_bit_depth():
  out = _gray(dicom.to_png(dicom_bytes(RAMP), 10**8))
  assert out.shape == (48, 64) and out[0, 0] == 0 and out[0, -1] == 255
  # As a 12-bit PNG is scaled: a dim image stays dim (no per-image stretch).
  dim = _gray(dicom.to_png(dicom_bytes(RAMP // 4), 10**8))
  np.testing.assert_array_equal(dim, np.round((RAMP // 4).astype(float) * 255 / 4095))


def test_monochrome1_is_inverted():
  out = _gray(dicom.to_png(dicom_bytes(RAMP, PhotometricInterpretation="MONOCHROME1"), 10**8))
  assert out[0, 0] == 255 and out[0, -1] == 0


def test_modality_and_voi_luts_are_applied():
  # Window 1000-2000 (in rescaled units): below is black, above is white.
  data = dicom_bytes(RAMP, RescaleSlope=1, RescaleIntercept=0, WindowCenter=1500,
                     WindowWidth=1000)  # fmt: skip
  out = _gray(dicom.to_png(data, 10**8))
  values = RAMP[0]
  assert (out[0][values < 900] == 0).all() and (out[0][values > 2100] == 255).all()
  middle = out[0][(values > 1100) & (values < 1900)]
  assert ((middle > 0) & (middle < 255)).all()


def test_too_large_and_not_dicom_are_refused():
  with pytest.raises(ValueError, match="64 x 48 pixels is too large"):
    dicom.to_png(dicom_bytes(RAMP), 1000)
  with pytest.raises(ValueError, match="not a readable DICOM file|DICOM file without pixel data"):
    dicom.to_png(b"\0" * 128 + b"DICM" + b"garbage", 10**8)


def test_without_pydicom_the_message_says_what_to_install(monkeypatch, tmp_path):
  real_import = builtins.__import__

  def no_pydicom(name, *args, **kwargs):
    if name.startswith("pydicom"):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  data = dicom_bytes(RAMP)  # Written with pydicom, before it goes.
  monkeypatch.setattr(builtins, "__import__", no_pydicom)
  with pytest.raises(ValueError, match=r"pip install 'pydicom>=3' \(from a txr checkout") as e:
    dicom.to_png(data, 10**8)
  assert "txr[dicom]" not in str(e.value)  # "txr" on the package index is another project
  # txr-predict's reading of a file checks its tags first: the same message, not an ImportError
  # that ended the run (tests/test_lite_predict.py runs txr-predict-lite without pydicom).
  path = tmp_path / "film.dcm"
  path.write_bytes(data)
  with pytest.raises(ValueError, match=r"pip install 'pydicom>=3' \(from a txr checkout"):
    predict.read_image(str(path))


def _voi_lut_item(descriptor, lut):
  item = Dataset()
  if descriptor is not None:
    item.LUTDescriptor = descriptor
  item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUTData
  return item


def test_a_voi_lut_is_scaled_by_its_own_depth():
  # A 10-bit LUT over 12-bit data: its output 0-1023 is the full range, not a quarter of it.
  item = _voi_lut_item([4096, 0, 10], np.arange(4096) // 4)
  out = _gray(dicom.to_png(dicom_bytes(RAMP, VOILUTSequence=[item]), 10**8))
  assert out[0, 0] == 0 and out[0, -1] == 255
  np.testing.assert_array_equal(out[0], np.round((RAMP[0] // 4) * 255.0 / 1023))


@pytest.mark.parametrize(
  "attributes, value",
  [
    ({"VOILUTSequence": [_voi_lut_item(None, np.arange(4096) // 16)]}, None),
    ({"RescaleSlope": "1.5", "RescaleIntercept": "0"}, b"1.5 "),
    ({"WindowCenter": "1500", "WindowWidth": "977"}, b"977 "),
  ],
  ids=["lut_without_descriptor", "slope_abc", "width_abc"],
)
def test_malformed_attributes_are_a_value_error_naming_them(attributes, value):
  data = dicom_bytes(RAMP, **attributes)
  if value:  # pydicom writes only valid numbers: the file says 'abc' instead.
    assert data.count(value) == 1
    data = data.replace(value, b"abc ")
  with pytest.raises(ValueError, match="invalid DICOM rescale, window or LUT attributes"):
    dicom.to_png(data, 10**8)


@pytest.mark.parametrize(
  "tag, value, message",
  [
    ("Rows", None, "Rows is missing or empty"),
    ("SamplesPerPixel", None, "SamplesPerPixel is missing or empty"),
    ("Columns", [64, 64], "Columns holds 2 values, not one"),
    ("BitsStored", None, "Bits Stored"),  # pydicom's own decode names it
  ],
)
def test_an_empty_or_several_valued_tag_is_a_value_error_naming_it(tag, value, message):
  """Before, int(None) and int(MultiValue) raised TypeErrors that stopped both predictors."""
  import pydicom

  ds = pydicom.dcmread(io.BytesIO(dicom_bytes(RAMP)))
  ds[tag].value = value
  buf = io.BytesIO()
  ds.save_as(buf, enforce_file_format=True)
  with pytest.raises(ValueError, match=message):
    dicom.to_png(buf.getvalue(), 10**8)
