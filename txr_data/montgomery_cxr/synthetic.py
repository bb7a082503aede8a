"""Synthetic 12-bit chest X-rays with lung masks, in the Montgomery archive's layout.

For the embedded sample and tests; make_dummy_data is the command line. The
radiographs come from the Shenzhen generator (`shenzhen_cxr.synthetic`), spread
to 12 bits with dither in the low bits and written as 16-bit grayscale PNGs,
every other one with an sBIT chunk of 12, as detectors write them. The masks are
that generator's two lung fields, as 8-bit 0/255 PNGs. File names are the
archive's own, so the sample splits as those files split in the real set.
PNGs are written with zlib alone (no Pillow), so a seed always gives the same bytes.
"""

import os
import shutil
import struct
import zlib

import numpy as np

from txr_data.shenzhen_cxr import synthetic as shenzhen_synthetic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Real names from the archive: its first 10 normal and first 10 TB images.
NORMAL_IDS = (1, 2, 3, 4, 5, 6, 8, 11, 13, 15)
TB_IDS = (104, 108, 113, 117, 126, 140, 141, 142, 144, 150)
_SEXES = ("F", "M", "M", "F", "O")
_AGES = ("045Y", "027Y", "063Y", "005Y", "010M", "33")
_FINDINGS = (
  "right upper lobe infiltrate with cavitation, active TB",
  "bilateral upper zone fibronodular opacities",
  "left apical pleural thickening and calcified granulomas",
)


def gray_png(pixels: np.ndarray, significant_bits: int = 0) -> bytes:
  """Encodes a 2-D uint8 or uint16 array as a grayscale PNG of that depth.

  Args:
    pixels: [height, width], uint8 (an 8-bit PNG) or uint16 (a 16-bit PNG).
    significant_bits: when non-zero, an sBIT chunk saying how many bits hold data.

  Returns:
    The PNG file's bytes.
  """
  depth = 16 if pixels.dtype == np.uint16 else 8
  height, width = pixels.shape
  rows = pixels.astype(">u2" if depth == 16 else np.uint8)
  chunks = [(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))]
  if significant_bits:
    chunks.append((b"sBIT", bytes([significant_bits])))
  scanlines = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 (none)
  chunks += [(b"IDAT", zlib.compress(scanlines, 9)), (b"IEND", b"")]
  return PNG_SIGNATURE + b"".join(
    struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    for kind, body in chunks
  )


def twelve_bit(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Spreads uint8 pixels over 12 bits (0-4095), with random low bits, as uint16."""
  spread = pixels.astype(np.int32) * 4095 // 255 + rng.integers(-2, 3, pixels.shape)
  return np.clip(spread, 0, 4095).astype(np.uint16)


def lung_masks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """The generator's lung fields (patient's left on the image's right), as uint8 0/255.

  Args:
    height: the image's height in px.
    width: the image's width in px.

  Returns:
    The (left, right) masks, each [height, width].
  """
  y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]

  def field(cx):
    inside = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
    return inside.astype(np.uint8) * 255

  return field(0.7), field(0.3)


def reading(n: int, label: int) -> str:
  """The n-th readings file's text, in the archive's format."""
  finding = _FINDINGS[n % len(_FINDINGS)] if label else "normal"
  text = f"Patient's Sex: {_SEXES[n % len(_SEXES)]} \nPatient's Age: {_AGES[n % len(_AGES)]}\n"
  text += f"{finding}\n"
  return text.replace("\n", "\r\n") if n % 4 == 3 else text  # Some files have CRLF.


def write_archive(out: str, num_images: int = 20, seed: int = 0) -> str:
  """Writes `<out>/MontgomerySet/{CXR_png,ClinicalReadings,ManualMask}`, replacing any there.

  One reading is missing (the 8th image's), to exercise that path; every image
  has both masks. The output is a function of the arguments alone.

  Args:
    out: the folder to write into (a manual dir for the builder).
    num_images: 2 to 20; half of each label.
    seed: the random seed.

  Returns:
    The `MontgomerySet` folder written.
  """
  if not 2 <= num_images <= len(NORMAL_IDS) + len(TB_IDS):
    raise ValueError(f"num_images={num_images}: 2 to {len(NORMAL_IDS) + len(TB_IDS)}.")
  rng = np.random.default_rng(seed)
  root = os.path.join(out, "MontgomerySet")
  shutil.rmtree(root, ignore_errors=True)
  folders = ["CXR_png", "ClinicalReadings", "ManualMask/leftMask", "ManualMask/rightMask"]
  for folder in folders:
    os.makedirs(os.path.join(root, folder))
  normal = (num_images + 1) // 2
  stems = [(f"MCUCXR_{i:04d}_0", 0) for i in NORMAL_IDS[:normal]]
  stems += [(f"MCUCXR_{i:04d}_1", 1) for i in TB_IDS[: num_images - normal]]
  for n, (stem, label) in enumerate(stems):
    height = int(rng.integers(90, 105))  # About 100 x 100 px, so the sample stays small.
    pixels = twelve_bit(shenzhen_synthetic.chest_xray(rng, bool(label), height), rng)
    files = {"CXR_png": gray_png(pixels, significant_bits=12 if n % 2 == 0 else 0)}
    for folder, mask in zip(folders[2:], lung_masks(*pixels.shape), strict=True):
      files[folder] = gray_png(mask)
    for folder, data in files.items():
      with open(os.path.join(root, folder, stem + ".png"), "wb") as f:
        f.write(data)
    if n != 7:
      with open(os.path.join(root, "ClinicalReadings", stem + ".txt"), "w", newline="") as f:
        f.write(reading(n, label))
  return root
