"""The input pipeline: decoding, padding, shuffling, static-shape padding, CV folds."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from txr_model import input_pipeline

SIZE = 75


def _config(data_dir, **kw):
  return input_pipeline.InputConfig("shenzhen_cxr/512", data_dir, SIZE, 8, **kw)


def test_each_epoch_is_a_shuffled_pass_of_its_own_wherever_the_stream_starts():
  """A resumed run starts the stream at its epoch: it must read what an uninterrupted run does."""
  examples = tf.data.Dataset.range(10)
  tf.random.set_seed(0)  # as txr-train sets it: the shuffle seeds must stay Python numbers

  def epochs(first, end):
    stream = input_pipeline.epoch_stream(examples, 8, seed=3, epochs=range(first, end))
    values = [int(v) for v in stream]
    return [values[i : i + 8] for i in range(0, len(values), 8)]

  uninterrupted = epochs(0, 4)
  assert len(uninterrupted) == 4 and epochs(2, 4) == uninterrupted[2:]  # not epoch 1's order
  assert all(len(set(epoch)) == 8 for epoch in uninterrupted)  # a pass: no example twice
  assert len({tuple(epoch) for epoch in uninterrupted}) == 4  # each epoch its own order
  other_seed = input_pipeline.epoch_stream(examples, 8, seed=4, epochs=range(1))
  assert [int(v) for v in other_seed] != uninterrupted[0]
  # A pipeline shorter than an epoch goes round its order again.
  short = [int(v) for v in input_pipeline.epoch_stream(examples, 15, 3, range(1))]
  assert short[10:] == short[:5]


def test_eval_pipeline_shapes_range_and_determinism(built_data_dir):
  ds = input_pipeline.make_dataset(_config(built_data_dir, split="validation"))
  batches = list(ds)
  assert sum(len(y) for _, y in batches) == 9  # no drop_remainder at evaluation
  x, y = batches[0]
  assert x.dtype == tf.uint8 and x.shape[1:] == (SIZE, SIZE, 1) and y.dtype == tf.float32
  again = next(iter(ds))[0]  # no augmentation at evaluation
  np.testing.assert_array_equal(x.numpy(), again.numpy())


def test_training_pipeline_is_static_shuffled_and_not_augmented(built_data_dir):
  config = _config(built_data_dir, training=True, drop_remainder=True, repeat=True, cache=False)
  ds = input_pipeline.make_dataset(config)
  assert ds.element_spec[0].shape == (8, SIZE, SIZE, 1) and ds.element_spec[0].dtype == tf.uint8
  # The host only shuffles: the model augments (augmentation.Augment). An epoch holds
  # exactly the evaluation pipeline's images, in another order.
  plain = input_pipeline.make_dataset(_config(built_data_dir, seed=0))
  shuffled = input_pipeline.make_dataset(_config(built_data_dir, training=True, seed=0))
  epoch = [np.concatenate([x.numpy() for x, _ in ds]) for ds in (plain, shuffled)]
  assert epoch[0].shape[0] == 45 and not np.array_equal(epoch[0], epoch[1])
  key = lambda images: sorted(image.tobytes() for image in images)  # noqa: E731
  assert key(epoch[0]) == key(epoch[1])


def test_static_validation_pads_with_weight_zero_and_counts_each_image_once(built_data_dir):
  # 9 validation images, global batch 8: 2 steps of 8, padded with 7 blanks.
  ds = input_pipeline.make_dataset(_config(built_data_dir, split="validation", pad_to_steps=2))
  batches = list(ds)
  assert [b[0].shape[0] for b in batches] == [8, 8]
  weights = np.concatenate([w.numpy() for _, _, w in batches])
  assert weights.sum() == 9 and set(weights) == {0.0, 1.0}


def test_pad_and_shard_gives_every_pipeline_the_same_steps():
  ds = tf.data.Dataset.from_tensor_slices((np.arange(10, dtype="float32"), np.ones(10, "float32")))
  shards = []
  for i in range(2):
    context = tf.distribute.InputContext(
      num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
    )
    shards.append(list(input_pipeline.pad_and_shard(ds, 2, 8, context).as_numpy_iterator()))
  assert [len(s) for s in shards] == [8, 8]  # 2 steps x 4 examples per pipeline each
  real = sorted(x for s in shards for x, _, w in s if w == 1.0)
  assert real == list(range(10))  # every example once, none twice


@pytest.mark.parametrize("k_folds", [3, 5, 10])
def test_cross_validation_rounds_use_every_fold_once_as_test_and_as_validation(k_folds):
  rounds = [input_pipeline.cross_validation_folds(k, k_folds) for k in range(k_folds)]
  for k, groups in enumerate(rounds):
    assert groups["test"] == (k,) and groups["validation"] == ((k + 1) % k_folds,)
    assert sorted(sum(groups.values(), ())) == list(range(k_folds))  # a partition
  assert sorted(r["validation"][0] for r in rounds) == list(range(k_folds))


def _real_shenzhen_names():
  """The archive's 662 file names (as tests/test_shenzhen_cxr.py), with their label strata."""
  names = [f"CHNCXR_{i:04d}_0.png" for i in range(1, 327)]
  names += [f"CHNCXR_{i:04d}_1.png" for i in range(327, 663)]
  return names, [f"shenzhen_cxr:{name[-5]}" for name in names]


@pytest.mark.parametrize("k_folds", range(3, 11))
def test_cross_validation_groups_are_balanced_and_stratified_on_the_real_names(k_folds):
  names, strata = _real_shenzhen_names()
  groups = input_pipeline.cross_validation_groups(names, strata, k_folds)
  sizes = [groups.count(k) for k in range(k_folds)]
  abnormal = [
    sum(g == k for g, s in zip(groups, strata, strict=True) if s.endswith("1"))
    for k in range(k_folds)
  ]
  # Every group n/K, both labels split evenly (hashing into K groups gave 285/200/177 for K=3).
  assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 662
  assert max(abnormal) - min(abnormal) <= 1 and sum(abnormal) == 336
  # The deal depends on the set of names only, not their order.
  shuffled = np.random.default_rng(k_folds).permutation(len(names))
  again = input_pipeline.cross_validation_groups(
    [names[i] for i in shuffled], [strata[i] for i in shuffled], k_folds
  )
  assert again == [groups[i] for i in shuffled]


@pytest.mark.parametrize("k_folds", range(3, 11))
def test_cross_validation_deals_each_patients_films_to_one_group(k_folds):
  """Montgomery's repeat films (0162_1, 0166_1, 0170_1; 0113_1, 0117_1) on its 138 real names."""
  from conftest import real_montgomery_stems

  from txr_data import nlm_tb
  from txr_data.montgomery_cxr import montgomery_cxr_dataset_builder as mcb

  stems = real_montgomery_stems()
  subjects = nlm_tb.subjects_of(stems, {}, mcb.PREFIX, mcb.KNOWN_REPEATS)
  groups = input_pipeline.cross_validation_groups(
    [f"{stem}.png" for stem in stems],
    [f"montgomery_cxr:{stem[-1]}" for stem in stems],
    k_folds,
    [subjects[stem] for stem in stems],
  )
  of_subject = {}
  for stem, group in zip(stems, groups, strict=True):
    of_subject.setdefault(subjects[stem], set()).add(group)
  assert of_subject["MCUCXR_0162_1"] == {groups[stems.index("MCUCXR_0170_1")]}
  assert all(len(found) == 1 for found in of_subject.values())
  sizes = [groups.count(k) for k in range(k_folds)]
  assert max(sizes) - min(sizes) <= 2 and sum(sizes) == 138  # A 3-film patient adds at most 2.


def test_cross_validation_reads_the_built_subjects(built_data_dir):
  """The sample's MCUCXR_0117_1 is MCUCXR_0113_1's patient: one group for every K."""
  for k_folds in range(3, 11):
    groups = input_pipeline._groups_of("montgomery_cxr/512", built_data_dir, k_folds)
    first, repeat = (groups[f"montgomery_cxr/512:MCUCXR_{i}_1.png"] for i in ("0113", "0117"))
    assert first == repeat, k_folds


def test_combined_datasets_read_both_and_cross_validation_covers_each_image_once(built_data_dir):
  both = "shenzhen_cxr/512+montgomery_cxr/512"
  config = input_pipeline.InputConfig(both, built_data_dir, SIZE, 8)
  assert input_pipeline.count(dataclasses.replace(config, split="test")) == 10 + 2
  seen = []
  for k in range(3):
    splits = input_pipeline.run_splits(config, 3, k)
    test = [
      (ex["dataset"].decode(), ex["image/filename"].decode())
      for ex in input_pipeline.examples(splits["test"], "all").as_numpy_iterator()
    ]
    assert len(test) == input_pipeline.count(splits["test"]) == 28  # 84 images / 3
    assert {d for d, _ in test} == {"shenzhen_cxr/512", "montgomery_cxr/512"}
    # Train, validation and test of one round are disjoint and cover everything.
    assert sum(input_pipeline.count(s) for s in splits.values()) == 84
    seen += test
  assert len(set(seen)) == len(seen) == 84
  assert set(input_pipeline.examples(config, "train").element_spec) == {
    "image", "label", "image/filename", "dataset"
  }  # fmt: skip
  with pytest.raises(ValueError, match="each once"):
    input_pipeline.dataset_names("shenzhen_cxr/512+")


@pytest.mark.parametrize(
  "dataset,side",
  [("shenzhen_cxr/512", 512), ("shenzhen_cxr/512+montgomery_cxr/512", 512),
   ("shenzhen_cxr/original", None), ("montgomery_cxr/512+montgomery_cxr/original", None)],
)  # fmt: skip
def test_max_side_is_read_from_the_builder_configs(tmp_path, dataset, side):
  """What the export shrinks served images to: the configs', and none if one keeps the source."""
  assert input_pipeline.max_side(dataset, str(tmp_path)) == side


def test_16_bit_original_reads_as_the_8_bit_config_stores_it(built_data_dir, tmp_path):
  # montgomery_cxr/original stores the 12-bit sources as uint16 PNGs; /512 scales them
  # to 8 bits by their real depth. Read at one small size, both must look alike.
  import tensorflow_datasets as tfds

  import txr_data

  tfds.builder("montgomery_cxr/original", data_dir=str(tmp_path)).download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=txr_data.MONTGOMERY_SAMPLE_DIR)
  )
  images = {}
  for config, data_dir in (("original", str(tmp_path)), ("512", built_data_dir)):
    read = input_pipeline.InputConfig(f"montgomery_cxr/{config}", data_dir, 64, 4, split="all")
    examples = input_pipeline.examples(read, "all").as_numpy_iterator()
    names = [ex["image/filename"] for ex in examples]
    batches = [x.numpy() for x, _ in input_pipeline.make_dataset(read)]
    images[config] = dict(zip(names, np.concatenate(batches).astype(float), strict=True))
  assert images["original"].keys() == images["512"].keys() and len(images["512"]) == 20
  for name, image in images["512"].items():
    assert image.mean() > 40  # not a black frame
    assert np.abs(images["original"][name] - image).mean() < 3, name
