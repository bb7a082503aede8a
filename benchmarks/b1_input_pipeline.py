r"""B1: txr's input pipeline against what a Keras user would write instead.

  python -m benchmarks.b1_input_pipeline [--num_images=32 --side=3000]

Images/s at 299 px, one cold pass each (no cache), of:
  * txr's pipeline reading the `512` config;
  * the same pipeline reading the `original` config;
  * keras.utils.image_dataset_from_directory on the raw PNG folder, same resize.
The same work on both sides (decode and resize; txr's model augments, not its
pipeline): txr (512) >= 5x image_dataset_from_directory.
"""

import os

from absl import app
import keras

from benchmarks import synthetic
from txr_model import input_pipeline

SIZE, BATCH = 299, 32


def main(argv):
  del argv
  files = synthetic.png_files()
  configs = {name: synthetic.data_dir(name) for name in ("512", "original")}
  rates = {}
  for name, data_dir in configs.items():
    config = input_pipeline.InputConfig(
      f"shenzhen_cxr/{name}", data_dir, SIZE, BATCH, split="all", training=True, cache=False
    )
    input_pipeline.count(config)  # Warm the file cache and TFDS metadata.
    rates[f"txr_{name}"], _ = synthetic.images_per_second(input_pipeline.make_dataset(config))
  keras_ds = keras.utils.image_dataset_from_directory(
    os.path.dirname(files[0]),
    labels=None,
    color_mode="grayscale",
    image_size=(SIZE, SIZE),
    batch_size=BATCH,
    shuffle=False,
  )
  rates["keras_image_dataset_from_directory"], n = synthetic.images_per_second(keras_ds)
  baseline = rates["keras_image_dataset_from_directory"]
  synthetic.write_results(
    "b1_input_pipeline",
    {
      "images": n,
      "images_per_second": rates,
      "B1_txr_512_vs_keras": rates["txr_512"] / baseline,
      "txr_original_vs_keras": rates["txr_original"] / baseline,
      "goal": "B1_txr_512_vs_keras >= 5 (same work: decode and resize)",
    },
  )


if __name__ == "__main__":
  app.run(main)
