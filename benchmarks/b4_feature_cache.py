r"""B4: with --cache_features, the head phase's second epoch against its first.

  python -m benchmarks.b4_feature_cache [--num_images=32 --side=3000]

Epoch 1 computes the pooled features of every training image (4 views) and
trains the head on them; epoch 2 only reads the cache. Goal <= 1/50.
"""

import os
import shutil
import time

from absl import app
import keras

from benchmarks import synthetic
from txr_model import feature_cache
from txr_model import input_pipeline
from txr_model import model as model_lib

SIZE, BATCH, VIEWS = 299, 32, 4


class EpochTimes(keras.callbacks.Callback):
  def on_epoch_begin(self, epoch, logs=None):
    self.start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.times.append(time.perf_counter() - self.start)

  def __init__(self):
    super().__init__()
    self.times = []


def main(argv):
  del argv
  config = input_pipeline.InputConfig(
    "shenzhen_cxr/512", synthetic.data_dir("512"), SIZE, BATCH, split="all"
  )
  cache_dir = os.path.join(synthetic.work_dir(), "feature_cache")
  shutil.rmtree(cache_dir, ignore_errors=True)
  # Random weights stand in for ImageNet's (no download); the cost is the same.
  model = model_lib.build_model(SIZE, "none", mode="end_to_end")
  head = model_lib.head(model)
  head.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
  steps = max(1, input_pipeline.count(config) * VIEWS // BATCH)

  start = time.perf_counter()
  features = feature_cache.cached_features(model, config, "none", VIEWS, cache_dir)
  extraction = time.perf_counter() - start
  timer = EpochTimes()
  head.fit(
    feature_cache.batched(features, BATCH, training=True, pad_to_steps=0, seed=0),
    epochs=3,
    steps_per_epoch=steps,
    callbacks=[timer],
    verbose=0,
  )
  epoch1 = extraction + timer.times[0]
  synthetic.write_results(
    "b4_feature_cache",
    {
      "views": VIEWS,
      "steps_per_epoch": steps,
      "seconds": {"feature_extraction": extraction, "epochs": timer.times},
      "epoch_1_seconds": epoch1,
      "B4_epoch2_over_epoch1": timer.times[1] / epoch1,
      "goal": "<= 0.02",
    },
  )


if __name__ == "__main__":
  app.run(main)
