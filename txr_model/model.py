"""The classifier: a frozen-BatchNorm InceptionV3 base and a sigmoid head for P(TB)."""

import os
import tempfile

from absl import logging
import keras
import tensorflow as tf

# InceptionV3's top-level blocks end in layers mixed0 ... mixed10.
NUM_BLOCKS = 11
NOTOP_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _local_weights(weights: str) -> str:
  """Checks a weights file exists (local or gs://) and returns a local copy's path."""
  if not tf.io.gfile.exists(weights):
    raise FileNotFoundError(
      f"--weights={weights}: no such file. Pass a Keras InceptionV3 no-top weights"
      f" file (e.g. {NOTOP_WEIGHTS} or a .weights.h5), 'imagenet' or 'none'."
    )
  if "://" not in weights:
    return weights
  local = os.path.join(tempfile.mkdtemp(), os.path.basename(weights))
  tf.io.gfile.copy(weights, local)
  return local


def build_model(image_size: int, weights: str = "none", dropout: float = 0.2) -> keras.Model:
  """InceptionV3 (include_top=False) -> global average pool -> dropout -> Dense(1, sigmoid).

  The model takes [-1, 1]-scaled RGB images (see input_pipeline). The base is
  frozen and always called with training=False, so its BatchNorm statistics
  stay fixed during fine-tuning. The output is float32 under mixed precision.

  Args:
    image_size: input height and width, at least 75.
    weights: 'imagenet' (downloaded by Keras once into ~/.keras/models),
      a local or gs:// path to a no-top weights file, or 'none' (random init).
    dropout: dropout rate before the classifier.
  """
  if weights.lower() == "none":
    base_weights = None
  elif weights == "imagenet":
    base_weights = "imagenet"
  else:
    base_weights = _local_weights(weights)
  try:
    base = keras.applications.InceptionV3(
      include_top=False, weights=base_weights, input_shape=(image_size, image_size, 3)
    )
  except Exception as e:  # Keras raises a bare Exception on a failed fetch.
    if base_weights != "imagenet" or "URL fetch failure" not in str(e):
      raise
    raise RuntimeError(
      f"--weights=imagenet: could not download {NOTOP_WEIGHTS} ({e}). Without"
      " internet, download it on another machine and pass --weights=/path/to/"
      f"{NOTOP_WEIGHTS} (or put it in ~/.keras/models/), or use --weights=none."
    ) from e
  base.trainable = False
  inputs = keras.Input((image_size, image_size, 3), name="image")
  x = base(inputs, training=False)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  x = keras.layers.Dropout(dropout, name="dropout")(x)
  outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="tb_probability")(x)
  logging.info("InceptionV3 at %d px, weights=%s", image_size, weights)
  return keras.Model(inputs, outputs, name="txr_inception_v3")


def base_of(model: keras.Model) -> keras.Model:
  return model.get_layer("inception_v3")


def calibrate_batchnorm(model: keras.Model, images) -> None:
  """Sets every BatchNorm's statistics from one batch (data-dependent initialisation).

  For `weights=none` only: randomly initialised statistics (mean 0, variance 1)
  make a frozen random base's features vanish (about 1e-4), leaving the head
  nothing to learn from. With momentum 0, one training-mode pass sets each
  layer's statistics to its batch statistics; they then stay frozen as usual.
  """
  layers = [
    layer for layer in base_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)
  ]
  base, trainable = base_of(model), base_of(model).trainable
  momenta = [layer.momentum for layer in layers]
  base.trainable = True  # A frozen BatchNorm ignores training=True.
  for layer in layers:
    layer.momentum = 0.0
  base(images, training=True)
  for layer, momentum in zip(layers, momenta, strict=True):
    layer.momentum = momentum
  base.trainable = trainable


def unfreeze_top_blocks(model: keras.Model, num_blocks: int) -> int:
  """Makes the top `num_blocks` inception blocks trainable; BatchNorm stays frozen.

  Returns the number of trainable base layers. `num_blocks=11` unfreezes the
  whole base.
  """
  if not 1 <= num_blocks <= NUM_BLOCKS:
    raise ValueError(f"fine_tune_blocks={num_blocks}: expected 1 to {NUM_BLOCKS}.")
  base = base_of(model)
  base.trainable = True
  names = [layer.name for layer in base.layers]
  first = 0 if num_blocks == NUM_BLOCKS else names.index(f"mixed{NUM_BLOCKS - 1 - num_blocks}") + 1
  for i, layer in enumerate(base.layers):
    layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)
  return sum(layer.trainable for layer in base.layers)
