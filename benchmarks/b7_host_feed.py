r"""B7: how many images per second one host core feeds, before and after issue 18.

  python -m benchmarks.b7_host_feed [--num_images=64 --side=3000]

One tf.data thread (a private thread pool of 1), 299 px from the `512` config:
  * first epoch: read, decode, pad-resize (and, before, augment on the host);
  * later epochs: from the in-memory cache, shuffle, batch (and, before, augment);
before: txr's pipeline until issue 18 (benchmarks/host_pipeline_before.py);
after: today's (`input_pipeline.make_dataset`; the model augments).
Also the cost of the in-model augmentation in a CPU training step (299 px,
end_to_end) and, from the H200 figures in the README, the host cores an H200
needs. Goals: first epoch >= 235 img/s per core; later epochs >= 2,000.
"""

import dataclasses
import math
import time

from absl import app
import numpy as np
import tensorflow as tf

from benchmarks import host_pipeline_before
from benchmarks import synthetic
from txr_model import input_pipeline
from txr_model import model as model_lib

SIZE, BATCH, STEP_BATCH, STEPS = 299, 32, 8, 4
# Keras 3 + JAX on one H200, bfloat16, txr's model at 299 px (README).
H200_TRAINING_IMAGES_PER_SECOND = 3764


def _one_core(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.autotune.enabled = False
  return ds.with_options(options)


def _rate(ds: tf.data.Dataset, passes: int) -> float:
  """The best images/s over `passes` passes (after `ds` filled any cache)."""
  return max(synthetic.images_per_second(ds)[0] for _ in range(passes))


def _before(config: input_pipeline.InputConfig, cache: bool) -> tf.data.Dataset:
  ds = input_pipeline.examples(config, config.split).map(
    lambda ex: (
      host_pipeline_before.model_input(ex["image"], SIZE),
      tf.cast(ex["label"], tf.float32),
    ),
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  if cache:
    ds = ds.cache()
  ds = ds.shuffle(1024, seed=0).batch(BATCH, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.enumerate().map(host_pipeline_before.augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
  return _one_core(ds.prefetch(tf.data.AUTOTUNE))


def _after(config: input_pipeline.InputConfig, cache: bool) -> tf.data.Dataset:
  return _one_core(input_pipeline.make_dataset(dataclasses.replace(config, cache=cache)))


def _feed_rates(config: input_pipeline.InputConfig) -> dict:
  rates = {}
  for name, pipeline in (("before", _before), ("after", _after)):
    # First epochs alternate, so that a change in the machine's load hits both.
    rates[name] = {"first_epoch": _rate(pipeline(config, cache=False), passes=3)}
  for name, pipeline in (("before", _before), ("after", _after)):
    cached = pipeline(config, cache=True)
    synthetic.images_per_second(cached)  # the first epoch fills the cache
    rates[name]["later_epochs"] = _rate(cached, passes=5)
  return rates


def _augmentation_cost() -> dict:
  """Seconds per training step with and without the model's augmentation layer."""
  model = model_lib.build_model(SIZE, "none", mode="end_to_end")
  model.compile(optimizer="adam", loss="binary_crossentropy")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (STEP_BATCH, SIZE, SIZE, 1)).astype("uint8")
  y = (np.arange(STEP_BATCH) % 2).astype("float32")
  layer = model.get_layer(model_lib.AUGMENT)
  augment = tf.function(lambda images: layer(images, training=True))
  augment_xla = tf.function(lambda images: layer(images, training=True), jit_compile=True)
  model.train_on_batch(x, y)  # traces
  augment(x), augment_xla(x)
  times = {"train_step": [], "augmentation": [], "augmentation_xla": []}
  for _ in range(STEPS):
    for name, run in (
      ("train_step", lambda: model.train_on_batch(x, y)),
      ("augmentation", lambda: augment(x).numpy()),
      ("augmentation_xla", lambda: augment_xla(x).numpy()),
    ):
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  median = {name: float(np.median(t)) for name, t in times.items()}
  return {
    "batch": STEP_BATCH,
    "seconds_median": median,
    "augmentation_share_of_step": median["augmentation"] / median["train_step"],
    "augmentation_xla_share_of_step": median["augmentation_xla"] / median["train_step"],
  }


def main(argv):
  del argv
  config = input_pipeline.InputConfig(
    "shenzhen_cxr/512", synthetic.data_dir("512"), SIZE, BATCH, split="all", training=True
  )
  input_pipeline.count(config)  # warms the file cache and TFDS metadata
  rates = _feed_rates(config)
  cores = {
    name: {
      epoch: math.ceil(H200_TRAINING_IMAGES_PER_SECOND / rate) for epoch, rate in epochs.items()
    }
    for name, epochs in rates.items()
  }
  synthetic.write_results(
    "b7_host_feed",
    {
      "images": input_pipeline.count(config),
      "image_size": SIZE,
      "images_per_second_per_core": rates,
      "first_epoch_speedup": rates["after"]["first_epoch"] / rates["before"]["first_epoch"],
      "later_epochs_speedup": rates["after"]["later_epochs"] / rates["before"]["later_epochs"],
      "h200_host_cores_needed": cores,
      "h200_training_images_per_second": H200_TRAINING_IMAGES_PER_SECOND,
      "cpu_training_step": _augmentation_cost(),
      "goals": "first_epoch after >= 235 img/s per core; later_epochs after >= 2000",
    },
  )


if __name__ == "__main__":
  app.run(main)
