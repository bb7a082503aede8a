"""TFDS -> tf.data for training and evaluation: decode, pad-resize, augment; uint8 out.

Scaling to the base's input range happens inside the model (model.py).

Every map is parallel and the pipeline ends in prefetch. Each input pipeline
(one per worker) reads only its own part of the split, through
`strategy.distribute_datasets_from_function`.
"""

import dataclasses
import math

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

AUTOTUNE = tf.data.AUTOTUNE


def resize_to_square(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [h, w, 1] -> uint8 [size, size, 1], aspect kept (zero padded, not stretched)."""
  image = tf.image.resize_with_pad(tf.cast(image, tf.float32), image_size, image_size)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode_for_model(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """Encoded PNG/JPEG bytes (any channels or bit depth) -> model input, uint8 [size, size, 1]."""
  image = tf.io.decode_image(encoded, channels=1, expand_animations=False, dtype=tf.uint8)
  return resize_to_square(image, image_size)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Small random rotations, shifts, zooms, brightness and contrast of a 0-255 batch.

  Rotation (up to 7 degrees), shift (5%) and zoom (10%) are composed into one
  affine warp per image: three separate Keras Random* layers cost three warps
  (profiled: augmentation then took 60% of the pipeline's time). Stateless
  randomness, seeded per batch, keeps runs reproducible. No left-right flip:
  the heart is on the left, so a mirrored film is not a plausible chest X-ray.
  """
  batch = tf.shape(images)[0]
  height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 5)

  def uniform(i, shape, bound, center=0.0):
    return tf.random.stateless_uniform(shape, seeds[i], center - bound, center + bound)

  angle = uniform(0, [batch], 0.02 * 2 * math.pi)
  zoom = uniform(1, [batch], 0.1, center=1.0)
  shift_x, shift_y = uniform(2, [batch], 0.05) * width, uniform(3, [batch], 0.05) * height
  # The transform maps output to input pixels: rotate and scale about the centre, then shift.
  cx, cy = (width - 1) / 2, (height - 1) / 2
  a0, a1 = tf.cos(angle) / zoom, -tf.sin(angle) / zoom
  b0, b1 = tf.sin(angle) / zoom, tf.cos(angle) / zoom
  a2 = cx - a0 * cx - a1 * cy - shift_x
  b2 = cy - b0 * cx - b1 * cy - shift_y
  zeros = tf.zeros([batch])
  transform = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  images = keras.ops.image.affine_transform(images, transform, data_format="channels_last")
  photometric = tf.random.stateless_uniform([2, batch, 1, 1, 1], seeds[4], -0.1, 0.1)
  mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
  images = (images - mean) * (1 + photometric[0]) + mean + 255 * photometric[1]
  return tf.clip_by_value(images, 0.0, 255.0)


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """How to read one split of a built TFDS dataset."""

  dataset: str  # e.g. 'shenzhen_cxr/512'
  data_dir: str
  image_size: int
  global_batch_size: int
  split: str = "train"
  folds: tuple[int, ...] = ()  # If set, only examples with fold % num_folds in folds.
  num_folds: int = 10
  training: bool = False
  drop_remainder: bool = False
  repeat: bool = False
  cache: bool = True
  seed: int = 0
  # > 0: static shapes for an evaluation pass (TPU, multi-worker). The split
  # is padded with weight-0 blank images to exactly this many global batches,
  # so each image counts once per pass; elements are then (image, label, weight).
  pad_to_steps: int = 0


def make_dataset(
  config: InputConfig, input_context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
  """The batched, prefetched dataset of (uint8 image, label) for one input pipeline.

  Args:
    config: what to read and how.
    input_context: this input pipeline's context under a strategy; None for
      one pipeline.

  Returns:
    Batches of (uint8 [batch, size, size, 1], float32 labels), with float32
    weights as a third element when `config.pad_to_steps` is set.
  """
  split, batch_size = config.split, config.global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(config.global_batch_size)
    if input_context.num_input_pipelines > 1 and not config.pad_to_steps:
      # Each worker reads only its own even part of the split's files.
      split = tfds.even_splits(split, n=input_context.num_input_pipelines)[
        input_context.input_pipeline_id
      ]
  ds = examples(config, split)

  def decode(example):
    image = resize_to_square(tf.io.decode_png(example["image"], channels=1), config.image_size)
    return image, tf.cast(example["label"], tf.float32)

  ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
  if config.pad_to_steps:
    ds = pad_and_shard(ds, config.pad_to_steps, config.global_batch_size, input_context)
  if config.cache:  # Decoded, resized uint8: the expensive part, done once.
    ds = ds.cache()
  if config.training:
    ds = ds.shuffle(1024, seed=config.seed)
  if config.repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=config.drop_remainder, num_parallel_calls=AUTOTUNE)

  def augment_batch(index, batch):
    images, *rest = batch  # rest: labels, and weights when padded
    images = augment(
      tf.cast(images, tf.float32), tf.stack([tf.constant(config.seed, tf.int64), index])
    )
    return tf.cast(tf.round(images), tf.uint8), *rest

  if config.training:
    ds = ds.enumerate().map(augment_batch, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def pad_and_shard(
  ds: tf.data.Dataset,
  steps: int,
  global_batch_size: int,
  input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
  """Pads (x, y) examples to `steps` global batches as (x, y, weight), then shards.

  Static-shape strategies need full batches and the same step count on every
  replica. Padding the whole split with weight-0 blanks (rather than repeating
  images until a batch fills) keeps every weighted metric exact: each real
  example counts once. Every input pipeline pads the same whole split and
  keeps its own share, so all of them run exactly `steps` steps.

  Args:
    ds: unbatched (features, label) examples of one whole split.
    steps: global batches per pass; at least ceil(examples / global_batch_size).
    global_batch_size: examples per step over all replicas.
    input_context: this input pipeline's context, None for one pipeline.

  Returns:
    This pipeline's unbatched (features, label, weight) examples.
  """
  spec = ds.element_spec
  blank = tf.data.Dataset.from_tensors(
    (tf.zeros(spec[0].shape, spec[0].dtype), tf.zeros([], spec[1].dtype), 0.0)
  ).repeat()
  ds = ds.map(lambda x, y: (x, y, 1.0)).concatenate(blank).take(steps * global_batch_size)
  if input_context is not None and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return ds


def cross_validation_folds(k: int, num_folds: int) -> dict[str, tuple[int, ...]]:
  """The fold groups of round k of K-fold cross-validation over the `fold` feature.

  Fold k is the test set and fold k+1 (mod K) the validation set; the others train.

  Args:
    k: the round, 0 to num_folds - 1.
    num_folds: K, at least 3.

  Returns:
    {'train': ..., 'validation': ..., 'test': ...}: fold groups for InputConfig.folds.
  """
  validation = (k + 1) % num_folds
  train = tuple(f for f in range(num_folds) if f not in (k, validation))
  return {"train": train, "validation": (validation,), "test": (k,)}


def examples(config: InputConfig, split: str) -> tf.data.Dataset:
  """The split's examples, images still encoded, restricted to `config.folds`."""
  ds = tfds.load(
    config.dataset,
    split=split,
    data_dir=config.data_dir,
    shuffle_files=config.training,
    decoders={"image": tfds.decode.SkipDecoding()},
    read_config=tfds.ReadConfig(shuffle_seed=config.seed, try_autocache=False),
  )
  if config.folds:
    folds = tf.constant(config.folds, tf.int32)
    ds = ds.filter(lambda ex: tf.reduce_any(ex["fold"] % config.num_folds == folds))
  return ds


def count(config: InputConfig) -> int:
  """Number of examples `make_dataset(config)` reads in one pass (unbatched)."""
  if not config.folds:
    info = tfds.builder(config.dataset, data_dir=config.data_dir).info
    return info.splits[config.split].num_examples
  return int(examples(config, config.split).reduce(0, lambda n, _: n + 1))


def distributed_dataset(strategy: tf.distribute.Strategy, config: InputConfig):
  """`make_dataset` per input pipeline, through distribute_datasets_from_function."""
  return strategy.distribute_datasets_from_function(lambda ctx: make_dataset(config, ctx))
