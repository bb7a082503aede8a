"""Full-size synthetic inputs for the benchmarks, in the real archive's layout.

About 3000 x 3000 8-bit grayscale PNGs (like the NLM archive's) with readings
files, and the shenzhen_cxr configs built from them. Everything is cached
under --work_dir, so a rerun starts measuring at once.
"""

import json
import os
import platform
import time

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/txr_bench", "Where inputs and results go.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 32, "Synthetic full-size images to generate.")
_SIDE = flags.DEFINE_integer("side", 3000, "Approximate side of the synthetic images, px.")


def work_dir() -> str:
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  return _WORK_DIR.value


def manual_dir() -> str:
  """A ChinaSet_AllFiles/ tree of full-size PNGs (generated once)."""
  from txr_data.shenzhen_cxr import synthetic as generator

  root = os.path.join(work_dir(), f"archive_{_NUM_IMAGES.value}_{_SIDE.value}")
  png_dir = os.path.join(root, "ChinaSet_AllFiles", "CXR_png")
  done = os.path.join(root, "done")
  if os.path.exists(done):
    return root
  os.makedirs(png_dir, exist_ok=True)
  os.makedirs(os.path.join(root, "ChinaSet_AllFiles", "ClinicalReadings"), exist_ok=True)
  rng = np.random.default_rng(0)
  start = time.time()
  for i in range(_NUM_IMAGES.value):
    label = i % 2
    stem = f"CHNCXR_{i + 1 if label == 0 else 327 + i:04d}_{label}"
    side = int(_SIDE.value * rng.uniform(0.9, 1.05))
    pixels = generator.chest_xray(rng, bool(label), height=side)
    with open(os.path.join(png_dir, stem + ".png"), "wb") as f:
      f.write(tf.io.encode_png(pixels[..., None]).numpy())
    with open(os.path.join(root, "ChinaSet_AllFiles", "ClinicalReadings", stem + ".txt"), "w") as f:
      f.write("male 35yrs\nnormal\n")
  logging.info("Generated %d images in %.0f s", _NUM_IMAGES.value, time.time() - start)
  open(done, "w").close()
  return root


def png_files() -> list[str]:
  png_dir = os.path.join(manual_dir(), "ChinaSet_AllFiles", "CXR_png")
  return sorted(os.path.join(png_dir, f) for f in os.listdir(png_dir))


def data_dir(config: str) -> str:
  """A data_dir with shenzhen_cxr/<config> built from the synthetic archive."""
  import tensorflow_datasets as tfds

  import txr_data  # noqa: F401

  path = os.path.join(work_dir(), f"data_{_NUM_IMAGES.value}_{_SIDE.value}")
  builder = tfds.builder(f"shenzhen_cxr/{config}", data_dir=path)
  if not builder.is_prepared():
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir())
    )
  return path


def images_per_second(dataset: tf.data.Dataset) -> tuple[float, int]:
  """One full pass over a batched (images, ...) or images dataset."""
  count, start = 0, time.perf_counter()
  for batch in dataset:
    images = batch[0] if isinstance(batch, tuple) else batch
    count += int(images.shape[0])
  return count / (time.perf_counter() - start), count


def write_results(name: str, figures: dict) -> None:
  """Prints the figures and writes them, with the machine, to <work_dir>/<name>.json."""
  figures = {
    **figures,
    "machine": {
      "cpus": os.cpu_count(),
      "processor": platform.processor() or platform.machine(),
      "tensorflow": tf.__version__,
      "gpus": len(tf.config.list_physical_devices("GPU")),
    },
  }
  path = os.path.join(work_dir(), f"{name}.json")
  with open(path, "w") as f:
    json.dump(figures, f, indent=2)
  print(json.dumps(figures, indent=2))
  print(f"Wrote {path}")
