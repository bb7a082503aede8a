"""TFDS -> tf.data for training and evaluation: decode, pad-resize, cache, shuffle, batch.

The host only prepares uint8 images: augmentation and scaling to the base's
input range happen inside the model, on the accelerator (augmentation.py,
model.py), so after the first epoch a training image costs the host a copy.

Every map is parallel and the pipeline ends in prefetch. Each input pipeline
(one per worker) reads only its own part of the split, through
`strategy.distribute_datasets_from_function`.
"""

import dataclasses
import functools
import hashlib

import tensorflow as tf
import tensorflow_datasets as tfds

from txr_data import geometry
from txr_model import decode

AUTOTUNE = tf.data.AUTOTUNE
# Examples shuffled at once: at least a Shenzhen or Montgomery split, so a pass is a full shuffle.
SHUFFLE_BUFFER = 1024
# `--dataset=a/512+b/512` reads both datasets as one (see `dataset_names`).
DATASET_SEPARATOR = "+"
# A run's splits: the dataset's own, or (with cross-validation) its fold groups.
SPLITS = ("train", "validation", "test")


def model_input_fn(config: "InputConfig"):
  """The function from a stored PNG of `config`'s datasets to the model's uint8 [size, size, 1].

  Training, evaluation and scoring all read stored images through this one
  function, so a score is always of the pixels the model was trained on.
  The builders store 8-bit gray PNGs, decoded straight to one channel, except
  `montgomery_cxr/original`, which stores 16-bit ones, scaled by their real
  depth (`decode.stored_gray`). Choosing by the datasets' stored dtype once,
  instead of checking each image's header, halves the first epoch's decode cost.
  """
  sixteen_bit = any(
    builder.info.features["image"].dtype == tf.uint16
    for builder in builders(config.dataset, config.data_dir)
  )

  def model_input(encoded: tf.Tensor) -> tf.Tensor:
    if sixteen_bit:
      image = decode.stored_gray(encoded)
    else:
      image = tf.io.decode_png(encoded, channels=1)
    return geometry.resize_to_square(image, config.image_size)

  return model_input


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """How to read one split of a built TFDS dataset."""

  dataset: str  # e.g. 'shenzhen_cxr/512'
  data_dir: str
  image_size: int
  global_batch_size: int
  split: str = "train"
  # If set, only examples in these cross-validation groups of `num_folds`
  # (see `cross_validation_groups`); the split is then usually 'all'.
  folds: tuple[int, ...] = ()
  num_folds: int = 10
  training: bool = False  # shuffled (the model augments)
  # Training: steps per epoch. Each epoch of `epochs` is then a shuffled pass of its
  # own (`epoch_stream`); 0: one shuffled stream.
  epoch_steps: int = 0
  epochs: range = range(0)
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
  model_input = model_input_fn(config)

  def decode(example):
    return model_input(example["image"]), tf.cast(example["label"], tf.float32)

  ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
  if config.pad_to_steps:
    ds = pad_and_shard(ds, config.pad_to_steps, config.global_batch_size, input_context)
  if config.cache:  # Decoded, resized uint8: the expensive part, done once.
    ds = ds.cache()
  if config.training and config.epoch_steps:
    per_epoch = config.epoch_steps * batch_size * local_replicas(input_context)
    ds = epoch_stream(ds, per_epoch, config.seed, config.epochs)
  elif config.training:
    ds = ds.shuffle(SHUFFLE_BUFFER, seed=config.seed)
  if config.repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size, drop_remainder=config.drop_remainder, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def local_replicas(input_context: tf.distribute.InputContext | None) -> int:
  """The replicas one input pipeline feeds (it yields a per-replica batch for each per step)."""
  if input_context is None:
    return 1
  return input_context.num_replicas_in_sync // input_context.num_input_pipelines


def epoch_stream(
  ds: tf.data.Dataset,
  per_epoch: int,
  seed: int,
  epochs: range,
  buffer: int = SHUFFLE_BUFFER,
) -> tf.data.Dataset:
  """The training epochs `epochs` (0-based), each a shuffled pass of its own.

  Epoch e is the first `per_epoch` examples of `ds` shuffled by (`seed`, e),
  whatever ran before it: a run resumed at epoch e reads what an uninterrupted
  run reads there, where a restarted `shuffle().repeat()` would replay epoch
  1's order. The examples past a whole number of batches sit out that epoch
  only; a pipeline shorter than an epoch goes round its order again. Each
  epoch is a dataset of its own, concatenated: a shuffle seed must be a
  Python number once a global seed is set.

  Args:
    ds: the examples (cached: each epoch reads them again).
    per_epoch: examples per epoch, a whole number of this pipeline's batches.
    seed: the run's seed.
    epochs: the epochs to read, such as range(epochs done, epochs of the phase).
    buffer: the shuffle buffer; at least the split's size for a full shuffle.
  """
  passes = [
    ds.shuffle(buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
    .repeat()
    .take(per_epoch)
    for epoch in epochs
  ]
  return functools.reduce(tf.data.Dataset.concatenate, passes) if passes else ds.take(0)


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
  """The fold groups of round k of K-fold cross-validation.

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


def run_splits(base: InputConfig, num_folds: int = 0, k: int = 0) -> dict[str, InputConfig]:
  """A run's train/validation/test inputs: the dataset's splits, or round k of K-fold CV.

  txr-train trains on these and txr-evaluate re-creates them, so both read the
  same images.

  Args:
    base: the dataset and how to read it; its split and folds are replaced.
    num_folds: K > 0 for cross-validation; 0 for the dataset's own splits.
    k: the cross-validation round.

  Returns:
    {'train': ..., 'validation': ..., 'test': ...}.
  """
  if not num_folds:
    return {name: dataclasses.replace(base, split=name) for name in SPLITS}
  held_out = cross_validation_folds(k, num_folds)
  return {
    name: dataclasses.replace(base, split="all", folds=held_out[name], num_folds=num_folds)
    for name in SPLITS
  }


def dataset_names(dataset: str) -> list[str]:
  """The TFDS datasets that one `--dataset` reads: 'a/512+b/512' -> ['a/512', 'b/512'].

  Args:
    dataset: TFDS name/config, or several joined with '+'.

  Returns:
    The names, in order.

  Raises:
    ValueError: for an empty or repeated name.
  """
  names = dataset.split(DATASET_SEPARATOR)
  if not all(names) or len(set(names)) != len(names):
    raise ValueError(f"--dataset={dataset}: expected name/config[+name/config...], each once.")
  return names


def builders(dataset: str, data_dir: str) -> list[tfds.core.DatasetBuilder]:
  """The TFDS builder of each dataset in `dataset` (`--dataset` syntax), in order.

  Their `info` (version, splits, features) and `builder_config` (`max_side`)
  are what the pipeline knows of the stored datasets.
  """
  return [tfds.builder(name, data_dir=data_dir) for name in dataset_names(dataset)]


def cross_validation_groups(
  keys: list[str], strata: list[str], num_folds: int, subjects: list[str] | None = None
) -> list[int]:
  """Deals cases into `num_folds` cross-validation groups, balanced and stratified, by patient.

  A patient's cases (one subject's films) go to one group together, so no
  round tests on a patient it trained on. Within each stratum (a dataset's
  normal or abnormal cases), patients are ordered by the SHA-1 of their first
  key (the file name) and each is dealt to the group with the fewest cases
  so far (the lowest such group on ties), the deal continuing from one
  stratum to the next. With one case per patient this is round-robin: for
  every K each group holds n/K cases (sizes differ by at most 1), each
  stratum's cases split evenly (at most 1 apart); a patient with several
  films can add as many. The deal depends only on the set of cases, never on
  their order or the machine. (The builders' `fold` feature, a hash of the
  subject, defines the train/validation/test splits; hashing into K groups
  would leave them as uneven as K independent draws: 49 to 81 images for
  K=10 on the real Shenzhen names.)

  Args:
    keys: a unique key per case, such as its file name.
    strata: each case's stratum, such as 'shenzhen_cxr:1'.
    num_folds: K.
    subjects: each case's patient (the builders' `subject` feature, qualified
      by dataset); None: every case its own patient.

  Returns:
    Each case's group, 0 to K-1, in the order of `keys`.
  """
  subjects = keys if subjects is None else subjects
  if not len(keys) == len(strata) == len(subjects):
    raise ValueError(f"{len(keys)} keys but {len(strata)} strata and {len(subjects)} subjects")
  cases = {}
  for i, subject in enumerate(subjects):
    cases.setdefault(subject, []).append(i)

  def order(subject):  # A patient with mixed labels is dealt with the lower stratum.
    members = cases[subject]
    first = min(keys[i] for i in members)
    return min(strata[i] for i in members), hashlib.sha1(first.encode("utf-8")).hexdigest()

  groups, sizes = [0] * len(keys), [0] * num_folds
  for subject in sorted(cases, key=order):
    group = sizes.index(min(sizes))
    sizes[group] += len(cases[subject])
    for i in cases[subject]:
      groups[i] = group
  return groups


@functools.lru_cache(maxsize=16)
def _groups_of(dataset: str, data_dir: str, num_folds: int) -> dict[str, int]:
  """{'<dataset>:<file name>': group} over every split of every dataset in `dataset`.

  A dataset with a `subject` feature (the NLM builders) has each patient's
  films dealt to one group.
  """
  keys, strata, subjects = [], [], []
  for name in dataset_names(dataset):
    has_subject = "subject" in tfds.builder(name, data_dir=data_dir).info.features
    ds = tfds.load(
      name,
      split="all",
      data_dir=data_dir,
      decoders=tfds.decode.PartialDecoding(
        {"label": True, "image/filename": True, **({"subject": True} if has_subject else {})}
      ),
      read_config=tfds.ReadConfig(try_autocache=False),
    )
    builder_name = name.split("/")[
      0
    ]  # The builder's name, not its config: /512 and /original deal alike.
    for ex in ds.as_numpy_iterator():
      filename = ex["image/filename"].decode("utf-8")
      keys.append(f"{name}:{filename}")
      strata.append(f"{builder_name}:{int(ex['label'])}")
      subject = ex["subject"].decode("utf-8") if has_subject else filename
      subjects.append(f"{builder_name}:{subject}")
  file_names = [key.split(":", 1)[1] for key in keys]
  return dict(
    zip(keys, cross_validation_groups(file_names, strata, num_folds, subjects), strict=True)
  )


def examples(config: InputConfig, split: str) -> tf.data.Dataset:
  """The split's examples, images still encoded, restricted to `config.folds`.

  With several datasets (`a+b`), theirs are read one after the other, with
  only the features the model uses, which every builder has.

  Args:
    config: what to read.
    split: the split (or a part of it) of every dataset.

  Returns:
    Examples {'image' (encoded), 'label', 'image/filename', 'dataset' (its name)}.
  """
  parts = []
  for name in dataset_names(config.dataset):
    ds = tfds.load(
      name,
      split=split,
      data_dir=config.data_dir,
      shuffle_files=config.training,
      # Only what the model reads, the image still encoded: not Montgomery's lung masks.
      decoders=tfds.decode.PartialDecoding(
        {"image": True, "label": True, "image/filename": True},
        decoders={"image": tfds.decode.SkipDecoding()},
      ),
      read_config=tfds.ReadConfig(shuffle_seed=config.seed, try_autocache=False),
    )
    parts.append(
      ds.map(
        lambda ex, name=name: {
          "image": ex["image"],
          "label": ex["label"],
          "image/filename": ex["image/filename"],
          "dataset": tf.constant(name),
        }
      )
    )
  ds = functools.reduce(lambda a, b: a.concatenate(b), parts)
  if config.folds:
    groups = _groups_of(config.dataset, config.data_dir, config.num_folds)
    table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(list(groups), list(groups.values()), tf.string, tf.int32),
      default_value=-1,
    )
    folds = tf.constant(config.folds, tf.int32)
    ds = ds.filter(
      lambda ex: tf.reduce_any(
        table.lookup(tf.strings.join([ex["dataset"], ex["image/filename"]], ":")) == folds
      )
    )
  return ds


def count(config: InputConfig) -> int:
  """Number of examples `make_dataset(config)` reads in one pass (unbatched)."""
  if config.folds and config.split == "all":
    groups = _groups_of(config.dataset, config.data_dir, config.num_folds)
    return sum(group in config.folds for group in groups.values())
  if not config.folds:
    return sum(
      builder.info.splits[config.split].num_examples
      for builder in builders(config.dataset, config.data_dir)
    )
  return int(examples(config, config.split).reduce(0, lambda n, _: n + 1))


def training_images_in(trained_dataset: str, trained_folds: int, run_splits: dict,
                       evaluated: InputConfig) -> list[str]:  # fmt: skip
  """The datasets of `evaluated` whose read includes images a run trained on.

  Args:
    trained_dataset: the run's --dataset.
    trained_folds: the run's --folds (0 without cross-validation).
    run_splits: the run's (or fold's) InputConfigs per split (`run_splits`).
    evaluated: the InputConfig evaluated.

  Returns:
    Their names, sorted; none when every evaluated image was held out.
  """
  shared = set(dataset_names(evaluated.dataset)) & set(dataset_names(trained_dataset))
  if trained_folds:  # The fold groups span every TFDS split: only held-out folds are new.
    held_out = evaluated in (run_splits["validation"], run_splits["test"])
    return [] if held_out else sorted(shared)
  # The run trained on each dataset's `train` split, whichever datasets it joined.
  return sorted(n for n in shared if _reads_train_split(n, evaluated.data_dir, evaluated.split))


def _reads_train_split(name: str, data_dir: str, split: str) -> bool:
  """Whether reading `split` of dataset `name` reads any of its `train` split's files."""
  splits = tfds.builder(name, data_dir=data_dir).info.splits
  train = {f.filename for f in splits["train"].file_instructions}
  return any(f.filename in train for f in splits[split].file_instructions)


def dataset_version(config: InputConfig) -> str:
  """The built version of each dataset `config` reads, joined like their names."""
  return DATASET_SEPARATOR.join(
    str(builder.info.version) for builder in builders(config.dataset, config.data_dir)
  )


def max_side(dataset: str, data_dir: str) -> int | None:
  """The longest side the images of `dataset` are stored at (`--dataset` syntax), or None.

  Read from each dataset's builder config (`TbConfig.max_side`), so served
  images can be shrunk as the builder shrank the training images. With
  several datasets, the largest; None when any stores the source pixels.
  """
  sides = {getattr(b.builder_config, "max_side", None) for b in builders(dataset, data_dir)}
  return None if None in sides else max(sides)


def distributed_dataset(strategy: tf.distribute.Strategy, config: InputConfig):
  """`make_dataset` per input pipeline, through distribute_datasets_from_function."""
  return strategy.distribute_datasets_from_function(lambda ctx: make_dataset(config, ctx))
