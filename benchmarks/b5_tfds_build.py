r"""B5: `tfds build` speed per config against plainly reading the same files.

  python -m benchmarks.b5_tfds_build [--num_images=32 --side=3000]

Images/s of building each config (from a warm file cache) over images/s of
reading the PNG bytes. Goal: `original` close to 1, since 8-bit grayscale
sources are stored unchanged.
"""

import os
import shutil
import time

from absl import app
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks import synthetic
import txr_data  # noqa: F401


def main(argv):
  del argv
  files = synthetic.png_files()

  def read_all():
    start = time.perf_counter()
    for path in files:
      with tf.io.gfile.GFile(path, "rb") as f:
        f.read()
    return len(files) / (time.perf_counter() - start)

  def copy_all():  # The least any build that stores the bytes must do: read, write.
    target = os.path.join(synthetic.work_dir(), "b5_copy.bin")
    start = time.perf_counter()
    with open(target, "wb") as out:
      for path in files:
        with tf.io.gfile.GFile(path, "rb") as f:
          out.write(f.read())
      out.flush()
      os.fsync(out.fileno())
    os.remove(target)
    return len(files) / (time.perf_counter() - start)

  read_all()  # Warm the file cache: every side reads from memory.
  read_rate = max(read_all() for _ in range(3))
  copy_rate = max(copy_all() for _ in range(3))
  build_rates = {}
  for config in ("original", "512"):
    data_dir = os.path.join(synthetic.work_dir(), "b5_data")
    shutil.rmtree(data_dir, ignore_errors=True)
    builder = tfds.builder(f"shenzhen_cxr/{config}", data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=synthetic.manual_dir())
    )
    build_rates[config] = len(files) / (time.perf_counter() - start)
  synthetic.write_results(
    "b5_tfds_build",
    {
      "images": len(files),
      "megabytes": sum(os.path.getsize(f) for f in files) / 1e6,
      "read_images_per_second": read_rate,
      "read_write_copy_images_per_second": copy_rate,
      "build_images_per_second": build_rates,
      "B5_build_over_read": {c: r / read_rate for c, r in build_rates.items()},
      "build_over_read_write_copy": {c: r / copy_rate for c, r in build_rates.items()},
      "goal": "original close to 1",
    },
  )


if __name__ == "__main__":
  app.run(main)
