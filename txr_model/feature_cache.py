"""Bottleneck caching for the head phase, as retrain.py did it.

With the base frozen, the pooled InceptionV3 features of each training image
(a fixed number of augmented views) are computed once, stored with
tf.data.Dataset.save, and the head trains on them. The cache key covers the
backbone, dataset version, split, image size, weights, views, seed and dtype policy, so a
change to any of them never reuses stale features.
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from txr_model import input_pipeline
from txr_model import model as model_lib

# 2: the model takes uint8 gray images and scales them itself. 3: cross-validation
# folds are dealt, stratified (input_pipeline.cross_validation_groups), not fold % K.
# 4: 16-bit stored images (montgomery_cxr/original) are scaled by their real depth.
# 5: views are augmented by the model's own layer (augmentation.Augment), not tf.data.
FORMAT_VERSION = 5


def _weights_id(weights: str) -> str:
  if weights in ("imagenet", "none"):
    return weights
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(weights, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def cache_key(
  config: input_pipeline.InputConfig, weights: str, views: int, backbone: str = "inception_v3"
) -> dict:
  """Everything the cached features depend on."""
  return {
    "backbone": backbone,
    "dataset": config.dataset,
    "version": input_pipeline.dataset_version(config),
    "split": config.split,
    "folds": list(config.folds),
    "num_folds": config.num_folds,
    "image_size": config.image_size,
    "weights": _weights_id(weights),
    "views": views,
    "seed": config.seed,
    # Features computed in float16 are not a float32 run's (the model is built under it).
    "dtype_policy": keras.mixed_precision.global_policy().name,
    "keras": keras.version(),
    "format": FORMAT_VERSION,
  }


def cached_features(
  model: keras.Model, config: input_pipeline.InputConfig, weights: str, views: int, cache_dir: str
) -> tf.data.Dataset:
  """(pooled features, label) of `config`'s images, `views` per image (view 0 unaugmented).

  Views after the first go through the model's augmentation layer, the one
  that augments in end-to-end training and fine-tuning.

  Computed on first use on this process's default device and stored under
  `cache_dir`; later calls (and later epochs) only read them.
  """
  key = cache_key(config, weights, views, model_lib.base_of(model).name)
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"{config.split}-{digest}")
  done = path + ".json"  # Written last: a cache without it is incomplete.
  if tf.io.gfile.exists(done):
    logging.info("Reading cached features from %s", path)
    return tf.data.Dataset.load(path)
  if tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)
  pooled = model_lib.feature_extractor(model)
  augment = model.get_layer(model_lib.AUGMENT)  # the model's own augmentation, as in training

  @tf.function
  def extract(images, augmented):
    if augmented:
      images = tf.cast(tf.round(augment(images, training=True)), tf.uint8)
    return pooled(images, training=False)

  start, features, labels = time.time(), [], []
  plain = dataclasses.replace(config, training=False, repeat=False, drop_remainder=False)
  for view in range(views):
    for images, y in input_pipeline.make_dataset(plain):
      features.append(tf.cast(extract(images, view > 0), tf.float32).numpy())
      labels.append(y.numpy())
  ds = tf.data.Dataset.from_tensor_slices((np.concatenate(features), np.concatenate(labels)))
  ds.save(path)
  with tf.io.gfile.GFile(done, "w") as f:
    json.dump(key, f, indent=2)
  logging.info(
    "Cached %d feature vectors (%d views) in %.1f s: %s",
    sum(len(y) for y in labels),
    views,
    time.time() - start,
    path,
  )
  return tf.data.Dataset.load(path)


def batched(
  features: tf.data.Dataset,
  global_batch_size: int,
  training: bool,
  pad_to_steps: int,
  seed: int,
  input_context: tf.distribute.InputContext | None = None,
  epoch_steps: int = 0,
  epochs: range = range(0),
) -> tf.data.Dataset:
  """Shards, shuffles, repeats and batches cached features for one input pipeline.

  Args:
    features: (pooled features, label) of one split, from `cached_features`.
    global_batch_size: examples per step over all replicas.
    training: shuffle and repeat forever, in full batches.
    pad_to_steps: > 0 for evaluation under a static-shape strategy: padded to
      this many full global batches of (features, label, weight), repeated
      (see `input_pipeline.pad_and_shard`).
    seed: the shuffle seed.
    input_context: this input pipeline's context, None for one pipeline.
    epoch_steps: training: steps per epoch; each epoch of `epochs` is then a shuffled
      pass of its own (`input_pipeline.epoch_stream`), so a resumed run reads what
      an uninterrupted one does.
    epochs: training: the epochs to read (0-based).

  Returns:
    The batched, prefetched dataset.
  """
  batch = global_batch_size
  if input_context is not None:
    batch = input_context.get_per_replica_batch_size(global_batch_size)
  if pad_to_steps and not training:
    features = input_pipeline.pad_and_shard(
      features, pad_to_steps, global_batch_size, input_context
    )
  elif input_context is not None:
    features = features.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  features = features.cache()  # Before any repeat: a cache of an endless stream never completes.
  if training and epoch_steps:
    per_epoch = epoch_steps * batch * input_pipeline.local_replicas(input_context)
    features = input_pipeline.epoch_stream(features, per_epoch, seed, epochs, buffer=8192)
  elif training:
    features = features.shuffle(8192, seed=seed).repeat()
  elif pad_to_steps:
    features = features.repeat()
  return features.batch(batch, drop_remainder=training or bool(pad_to_steps)).prefetch(
    tf.data.AUTOTUNE
  )
