"""The classifier: a Keras application's base and a sigmoid head for P(TB), two ways to train it."""

import os
import tempfile

from absl import logging
import keras
import tensorflow as tf

from txr_model import augmentation
from txr_model import choices

# Layer names: the one place they are spelled (Keras names the base itself).
AUGMENT, SCALE, TO_RGB, NORMALIZE = "augment", "scale", "gray_to_rgb", "normalize"
POOL, DROPOUT, CLASSIFIER = "pool", "dropout", "tb_probability"
# From scratch, BatchNorm must track the changing activations within a few
# dozen steps (a demo epoch has about 30): Keras's default 0.99 lags for hundreds.
END_TO_END_BATCHNORM_MOMENTUM = 0.9


def block_ends(base: keras.Model) -> list[str]:
  """The names of the layers that end each top-level block of a base, first to last.

  Fine-tuning unfreezes whole blocks from the top: InceptionV3's 11 'mixed'
  blocks, DenseNet121's 5 dense blocks (each with its transition), and
  MobileNetV3Small's 11 inverted residual blocks (the last with the top conv).
  """
  names = [layer.name for layer in base.layers]
  if "mixed10" in names:
    return [f"mixed{i}" for i in range(11)]
  if "pool4_pool" in names:
    return ["pool1", "pool2_pool", "pool3_pool", "pool4_pool", names[-1]]
  ends = []
  for i in range(11):
    prefix = "expanded_conv_" if i == 0 else f"expanded_conv_{i}_"
    ends.append(f"{prefix}add" if f"{prefix}add" in names else f"{prefix}project_bn")
  return ends[:-1] + [names[-1]]


def _local_weights(weights: str, notop_weights: str) -> str:
  """Checks a weights file exists (local or gs://) and returns a local copy's path."""
  if not tf.io.gfile.exists(weights):
    raise FileNotFoundError(
      f"--weights={weights}: no such file. Pass the backbone's Keras no-top weights"
      f" file (e.g. {notop_weights} or a .weights.h5), 'imagenet' or 'none'."
    )
  if "://" not in weights:
    return weights
  local = os.path.join(tempfile.mkdtemp(), os.path.basename(weights))
  tf.io.gfile.copy(weights, local)
  return local


def build_model(
  image_size: int,
  weights: str,
  dropout: float = 0.2,
  mode: str = "two_phase",
  seed: int = 0,
  backbone: str = choices.DEFAULT_BACKBONE,
  init_from: str | None = None,
) -> keras.Model:
  """uint8 gray -> augment -> scaled RGB -> the backbone (no top) -> pool -> dropout -> sigmoid.

  The model takes uint8 grayscale images [size, size, 1], as the input
  pipeline and the export produce them, and does the cast, the backbone's own
  input scaling and the gray-to-RGB copy itself (the keras-io transfer-learning
  guide's preprocessing layer). So no caller re-implements it, and an
  accelerator receives 1 byte per pixel instead of 12 (float32 x 3). The
  random augmentation is its first layer (`augmentation.Augment`): it runs in
  the training step on the accelerator, and not at all outside training. Its
  output is float32 under mixed precision. The classifier's kernel starts at
  zero, so the first prediction is 0.5 (loss log 2) whatever the scale of the
  base's features, pretrained or random.

  Args:
    image_size: input height and width, at least the backbone's `min_size`.
    weights: 'imagenet' (downloaded by Keras once into ~/.keras/models),
      a local or gs:// path to a no-top weights file, or 'none' (random init).
    dropout: dropout rate before the classifier.
    mode: 'two_phase' freezes the whole base, BatchNorm included, for a first
      phase that trains the head (see `unfreeze_top_blocks` for the second);
      it needs pretrained weights. 'end_to_end' trains every layer, BatchNorm
      in training mode with momentum 0.9: from scratch with weights='none'.
    seed: the seed of the augmentation's random stream.
    backbone: a name in choices.BACKBONES.
    init_from: a model.keras of the same backbone and size whose weights (every
      layer's) the model starts from, `weights` then unused: fine-tuning a
      finished run.

  Returns:
    The uncompiled Keras model.

  Raises:
    ValueError: a bad mode, backbone or size, or 'two_phase' with random weights.
  """
  if mode not in choices.MODES:
    raise ValueError(f"--mode={mode!r}: expected one of {', '.join(choices.MODES)}.")
  if backbone not in choices.BACKBONES:
    raise ValueError(f"--backbone={backbone!r}: expected one of {', '.join(choices.BACKBONES)}.")
  spec = choices.BACKBONES[backbone]
  if image_size < spec.min_size:
    raise ValueError(f"--image_size={image_size}: {backbone} needs {spec.min_size} or more.")
  if init_from:
    weights = "none"  # Every weight comes from init_from below.
  elif mode == "two_phase" and weights.lower() == "none":
    raise ValueError(
      "--mode=two_phase needs pretrained --weights: a frozen random base gives the head"
      " nothing to learn. Train from scratch with --mode=end_to_end --weights=none."
    )
  if weights.lower() == "none":
    base_weights = None
  elif weights == "imagenet":
    base_weights = "imagenet"
  else:
    base_weights = _local_weights(weights, spec.notop_weights)
  try:
    base = getattr(keras.applications, spec.application)(
      include_top=False,
      weights=base_weights,
      input_shape=(image_size, image_size, 3),
      **spec.kwargs,
    )
  except Exception as e:  # Keras raises a bare Exception on a failed fetch.
    if base_weights != "imagenet" or "URL fetch failure" not in str(e):
      raise
    raise RuntimeError(
      f"--weights=imagenet: could not download {spec.notop_weights} ({e}). Without"
      " internet, download it on another machine and pass --weights=/path/to/"
      f"{spec.notop_weights} (or put it in ~/.keras/models/), or train from scratch"
      " with --mode=end_to_end --weights=none."
    ) from e
  if mode == "end_to_end":
    for layer in base.layers:
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = END_TO_END_BATCHNORM_MOMENTUM
  else:
    # In Keras 3 a `training=False` argument here would not reach nested layers
    # when the outer model is called with training=True: BatchNorm stays in
    # inference mode because its layers are non-trainable.
    base.trainable = False
  inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
  x = augmentation.Augment(seed, name=AUGMENT)(inputs)
  if spec.mean is None:
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=SCALE)(x)
    x = keras.layers.Concatenate(name=TO_RGB)([x, x, x])
  else:
    x = keras.layers.Rescaling(1 / 255.0, name=SCALE)(x)
    x = keras.layers.Concatenate(name=TO_RGB)([x, x, x])
    x = keras.layers.Normalization(
      mean=list(spec.mean), variance=[v**2 for v in spec.std], name=NORMALIZE
    )(x)
  x = base(x)
  x = keras.layers.GlobalAveragePooling2D(name=POOL)(x)
  x = keras.layers.Dropout(dropout, name=DROPOUT)(x)
  outputs = keras.layers.Dense(
    1, activation="sigmoid", kernel_initializer="zeros", dtype="float32", name=CLASSIFIER
  )(x)
  logging.info("%s at %d px, weights=%s, mode=%s", backbone, image_size, weights, mode)
  model = keras.Model(inputs, outputs, name=f"txr_{backbone}")
  if init_from:
    model.load_weights(init_from)
  return model


def as_float32(model: keras.Model) -> keras.Model:
  """A float32 copy of a mixed-precision model, with the same weights; else the model itself.

  The export serves in float32 whatever the training policy: float16 is slow
  on CPUs, where TF Serving often runs.

  Args:
    model: a model from `build_model`, under any dtype policy.

  Returns:
    A model whose layers all compute in float32.
  """

  def float32(node):
    if isinstance(node, dict):
      if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and node["config"][
        "name"
      ].startswith("mixed_"):
        return "float32"
      return {key: float32(value) for key, value in node.items()}
    if isinstance(node, list):
      return [float32(value) for value in node]
    return node

  config = model.get_config()
  converted = float32(config)
  if converted == config:
    return model
  clone = model.__class__.from_config(converted)
  clone.set_weights(model.get_weights())
  return clone


def base_of(model: keras.Model) -> keras.Model:
  """Returns the backbone of a `build_model` model (its one nested model)."""
  return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def feature_maps(model: keras.Model) -> keras.Model:
  """Returns the sub-model from images to the base's last feature maps (for Grad-CAM).

  The augmentation layer is left out: the maps are the base's whatever `training` says.

  Args:
    model: a `build_model` model.
  """
  x = model.get_layer(SCALE)(model.input)
  x = model.get_layer(TO_RGB)([x, x, x])
  if any(layer.name == NORMALIZE for layer in model.layers):
    x = model.get_layer(NORMALIZE)(x)
  return keras.Model(model.input, base_of(model)(x))


def feature_extractor(model: keras.Model) -> keras.Model:
  """Returns the sub-model from images to pooled base features (shared weights).

  Args:
    model: a `build_model` model.
  """
  return keras.Model(model.input, model.get_layer(POOL).output)


def head(model: keras.Model) -> keras.Model:
  """Returns the sub-model from pooled features to P(TB): the model's own head layers.

  Training it trains `model`'s head (the layers are shared), which is how the
  cached-feature phase works.

  Args:
    model: a `build_model` model.
  """
  features = keras.Input(model.get_layer(POOL).output.shape[1:])
  return keras.Sequential([features, model.get_layer(DROPOUT), model.get_layer(CLASSIFIER)])


def unfreeze_top_blocks(model: keras.Model, num_blocks: int) -> int:
  """Makes the top `num_blocks` blocks of the base trainable; BatchNorm stays frozen.

  BatchNorm layers stay non-trainable, which in Keras 3 is what keeps them in
  inference mode (their pretrained statistics) under `fit`'s training=True.

  Args:
    model: a `build_model(mode='two_phase')` model.
    num_blocks: 1 to the base's number of blocks (`block_ends`); all of them
      unfreezes the whole base.

  Returns:
    The number of trainable base layers.
  """
  base = base_of(model)
  ends = block_ends(base)
  if not 1 <= num_blocks <= len(ends):
    raise ValueError(f"fine_tune_blocks={num_blocks}: expected 1 to {len(ends)}.")
  base.trainable = True
  names = [layer.name for layer in base.layers]
  first = 0 if num_blocks == len(ends) else names.index(ends[-1 - num_blocks]) + 1
  for i, layer in enumerate(base.layers):
    layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)
  return sum(layer.trainable for layer in base.layers)
