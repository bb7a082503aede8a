"""Fixes `model.fit` under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20329).

Two spots in keras/src/backend/tensorflow/trainer.py fail with several workers:
`_maybe_symbolic_build` reduces a tuple of PerReplica batches with
`strategy.reduce`, and `reduce_per_replica` reduces scalar metrics with
`axis=0` ("Invalid reduction dimension 0 for input with 0 dimensions"). The
patch replaces just those two reductions, and only on affected versions.
"""

from absl import logging
import keras
import tensorflow as tf

# Checked: 3.15.1 has both bugs. Newer versions are left alone: if multi-worker
# fit fails there with the errors above, raise this bound.
AFFECTED = ((3, 0), (3, 15, 1))


def _version() -> tuple[int, ...]:
  return tuple(int(p) for p in keras.version().split(".")[:3] if p.isdigit())


def is_affected(version: tuple[int, ...] | None = None) -> bool:
  """Whether `version` (default: the installed Keras) needs the multi-worker patch."""
  version = _version() if version is None else version
  return AFFECTED[0] <= version <= AFFECTED[1]


def patch_multi_worker_fit() -> bool:
  """Applies the fix once if this Keras is affected; returns whether it is in place."""
  from keras.src.backend.tensorflow import trainer

  if getattr(trainer, "_txr_patched", False):
    return True
  if not is_affected():
    return False
  original_reduce = trainer.reduce_per_replica
  original_build = trainer.TensorFlowTrainer._maybe_symbolic_build

  def reduce_per_replica(values, strategy, reduction):
    if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):

      def mean(v):  # Scalars have no axis 0: reduce across replicas only.
        rank = strategy.experimental_local_results(v)[0].shape.rank
        return strategy.reduce("MEAN", v, axis=0 if rank else None)

      return tf.nest.map_structure(mean, values)
    return original_reduce(values, strategy, reduction)

  def maybe_symbolic_build(self, iterator=None, data_batch=None):
    strategy = self._distribute_strategy
    if iterator is not None and strategy is not None:
      if trainer._collective_all_reduce_multi_worker(strategy):
        # Building needs only shapes: take this worker's first replica's batch.
        for _, _, it in iterator:
          data_batch = tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0], next(it)
          )
          break
        iterator = None
    return original_build(self, iterator=iterator, data_batch=data_batch)

  trainer.reduce_per_replica = reduce_per_replica
  trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
  trainer._txr_patched = True
  logging.info("Patched Keras %s for multi-worker fit (keras#20329).", keras.version())
  return True
