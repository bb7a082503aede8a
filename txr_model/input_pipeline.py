"""TFDS -> tf.data for training and evaluation: decode, pad-resize, augment, scale to [-1, 1].

Every map is parallel and the pipeline ends in prefetch. Each input pipeline
(one per worker) reads only its own part of the split, through
`strategy.distribute_datasets_from_function`.
"""

import dataclasses

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

AUTOTUNE = tf.data.AUTOTUNE


def resize_to_square(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [h, w, 1] -> uint8 [size, size, 1], aspect kept (zero padded, not stretched)."""
  image = tf.image.resize_with_pad(tf.cast(image, tf.float32), image_size, image_size)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def scale(image: tf.Tensor) -> tf.Tensor:
  """uint8 or float grayscale 0-255 [..., 1] -> float32 RGB in [-1, 1], as InceptionV3 expects."""
  image = tf.image.grayscale_to_rgb(tf.cast(image, tf.float32))
  return keras.applications.inception_v3.preprocess_input(image)


def decode_for_model(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """Encoded PNG/JPEG bytes (any channels or bit depth) -> model input [size, size, 3]."""
  image = tf.io.decode_image(encoded, channels=1, expand_animations=False, dtype=tf.uint8)
  return scale(resize_to_square(image, image_size))


def augmenter(seed: int) -> keras.Sequential:
  """Small geometric and photometric changes on 0-255 batches.

  No left-right flip: the heart and aorta are on the left, so a flipped film is
  not a plausible chest X-ray.
  """
  return keras.Sequential(
    [
      keras.layers.RandomRotation(0.02, fill_mode="constant", seed=seed),
      keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 1),
      keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
      keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
      keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 4),
    ],
    name="augment",
  )


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


def make_dataset(
  config: InputConfig, input_context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
  """The batched, prefetched dataset of (image, label) for one input pipeline."""
  split, batch_size = config.split, config.global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(config.global_batch_size)
    if input_context.num_input_pipelines > 1:
      # Each worker reads only its own even part of the split's files.
      split = tfds.even_splits(split, n=input_context.num_input_pipelines)[
        input_context.input_pipeline_id
      ]
  ds = examples(config, split)

  def decode(example):
    image = resize_to_square(tf.io.decode_png(example["image"], channels=1), config.image_size)
    return image, tf.cast(example["label"], tf.float32)

  ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
  if config.cache:  # Decoded, resized uint8: the expensive part, done once.
    ds = ds.cache()
  if config.training:
    ds = ds.shuffle(1024, seed=config.seed)
  if config.repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=config.drop_remainder, num_parallel_calls=AUTOTUNE)
  augment = augmenter(config.seed) if config.training else None

  def to_model(images, labels):
    images = tf.cast(images, tf.float32)
    if augment is not None:
      images = augment(images, training=True)
    return scale(images), labels

  ds = ds.map(to_model, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


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
