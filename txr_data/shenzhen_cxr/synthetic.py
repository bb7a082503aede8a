"""Synthetic chest-X-ray-like images and archives in the real archive's layout.

For the embedded sample, the demo, tests and benchmarks; make_dummy_data is
the command line. File names are the archive's own (normals CHNCXR_0001_0
onwards, abnormals CHNCXR_0327_1 onwards), so the builder splits a generated
set as it splits the real one: all 662 names give 484 train, 64 validation and
114 test images. Writing palette PNGs needs Pillow (the `test` extra).
"""

import os
import shutil

import numpy as np

FIRST_ID = (1, 327)  # The archive numbers normals 0001-0326, abnormals 0327-0662.
NUM_NORMAL = 326
_FIRST_LINES = ["male 35yrs", "Male,35yr", "female 25", "male  45 yrs", "O", "female 8mon"]
_FINDINGS = ["STB,ATB in left upper field", "bilateral PTB, infiltrative", "right upper PTB"]


def chest_xray(
  rng: np.random.Generator,
  abnormal: bool,
  height: int | None = None,
  lesion_contrast: float = 0.35,
  nuisance: float = 0.0,
) -> np.ndarray:
  """A uint8 radiograph-like image: body, lungs, spine, ribs and, if abnormal, lesions.

  Args:
    rng: the random generator (its state advances).
    abnormal: draw 2-4 upper-zone opacities.
    height: in px; defaults to a random 100-128 (the sample); benchmarks ask for ~3000.
    lesion_contrast: the opacities' peak brightness, 0-1; lower is harder to see.
    nuisance: patient-to-patient variation, 0-1: body position and size,
      exposure and noise (0, the sample's setting, draws none of it). Without
      it every film has the same anatomy, and a pixel-level linear model
      separates even faint lesions.

  Returns:
    A [height, width] uint8 array.
  """
  h = int(rng.integers(100, 129)) if height is None else height
  w = int(h * rng.uniform(0.85, 1.15))
  y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
  if nuisance:
    shift_x, shift_y = rng.uniform(-0.08, 0.08, 2) * nuisance
    zoom = 1 + rng.uniform(-0.1, 0.1) * nuisance
    x, y = (x - 0.5 - shift_x) / zoom + 0.5, (y - 0.5 - shift_y) / zoom + 0.5
  img = 0.15 + 0.55 * (((x - 0.5) / 0.48) ** 2 + ((y - 0.55) / 0.6) ** 2 < 1)
  for cx in (0.3, 0.7):  # lung fields
    lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
    ribs = 0.08 * (np.sin((y - 0.1 * np.abs(x - 0.5)) * 60) > 0.6)
    img = np.where(lung, 0.25 + ribs, img)
  img += 0.3 * np.exp(-(((x - 0.5) / 0.04) ** 2))  # spine
  if abnormal:
    for _ in range(int(rng.integers(2, 5))):  # upper-zone opacities
      cx = rng.choice([0.3, 0.7]) + rng.uniform(-0.07, 0.07)
      cy = rng.uniform(0.25, 0.4)
      r = rng.uniform(0.04, 0.08)
      img += lesion_contrast * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / r**2))
  if nuisance:
    gain, offset = 1 + rng.uniform(-0.25, 0.25) * nuisance, rng.uniform(-0.1, 0.1) * nuisance
    img = img * gain + offset
  img += rng.normal(0, 0.01 + 0.04 * nuisance, img.shape)
  return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_archive(
  out: str,
  num_images: int,
  seed: int = 0,
  lesion_contrast: float = 0.35,
  nuisance: float = 0.0,
  female_lesion_contrast: float | None = None,
) -> str:
  """Writes `<out>/ChinaSet_AllFiles/{CXR_png,ClinicalReadings}`, replacing any there.

  PNGs come in palette, RGB-with-equal-channels and L modes, as in the
  archive, and readings files in its varied formats; a few are missing. The
  output is a function of the arguments alone.

  Args:
    out: the folder to write into (a manual dir for the builder).
    num_images: 2 to 662; half of each label while the archive's names last.
    seed: the random seed.
    lesion_contrast: see `chest_xray`.
    nuisance: see `chest_xray`.
    female_lesion_contrast: the lesions' contrast in the images whose reading
      says female (None: `lesion_contrast`, as in every other image); lower
      makes a set on which a model does worse for women, to test that the
      evaluation's subgroups find it.

  Returns:
    The `ChinaSet_AllFiles` folder written.
  """
  from PIL import Image

  if not 2 <= num_images <= 662:
    raise ValueError(f"num_images={num_images}: the archive has 2 to 662 names.")
  rng = np.random.default_rng(seed)
  root = os.path.join(out, "ChinaSet_AllFiles")
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(os.path.join(root, "CXR_png"))
  os.makedirs(os.path.join(root, "ClinicalReadings"))
  normal = min((num_images + 1) // 2, NUM_NORMAL)
  n = 0
  for label, (first, count) in enumerate(zip(FIRST_ID, (normal, num_images - normal), strict=True)):
    for i in range(count):
      stem = f"CHNCXR_{first + i:04d}_{label}"
      has_reading = n % 11 != 5  # A few readings are missing, as may happen.
      first_line = _FIRST_LINES[n % len(_FIRST_LINES)]
      contrast = lesion_contrast
      if female_lesion_contrast is not None and has_reading and first_line.startswith("female"):
        contrast = female_lesion_contrast
      pixels = chest_xray(rng, bool(label), lesion_contrast=contrast, nuisance=nuisance)
      image = Image.fromarray(pixels, "L")
      image = [image.convert("P"), image.convert("RGB"), image][n % 3]
      image.save(os.path.join(root, "CXR_png", stem + ".png"), optimize=True)
      if has_reading:
        finding = _FINDINGS[n % len(_FINDINGS)] if label else "normal"
        with open(os.path.join(root, "ClinicalReadings", stem + ".txt"), "w") as f:
          f.write(f"{first_line}\n{finding}\n")
      n += 1
  return root
