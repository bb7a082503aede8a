"""Training-time augmentation inside the model, on the accelerator, in ops XLA compiles.

The host pipeline only decodes, pad-resizes, caches, shuffles and batches; the
random rotation, shift, zoom, brightness and contrast run here, in the training
step, on whatever device trains. A TPU runs only XLA, and TensorFlow's image
warp (`ImageProjectiveTransformV3`, behind Keras's `RandomRotation`,
`RandomZoom`, `RandomTranslation` and `keras.ops.image.affine_transform`) has
no XLA kernel (tensorflow/tensorflow#55194, #100865), so the warp here is
bilinear sampling written as gathers, which every XLA backend compiles.
"""

import math

import keras
import tensorflow as tf

# Ranges of the random transform: up to 7.2 degrees of rotation, 5% shift, 10%
# zoom, 10% brightness and contrast. No left-right flip: the heart is on the
# left, so a mirrored film is not a plausible chest X-ray.
MAX_ROTATION = 0.02 * 2 * math.pi
MAX_SHIFT = 0.05
MAX_ZOOM = 0.1
MAX_PHOTOMETRIC = 0.1


def random_transforms(seed: tf.Tensor, batch: tf.Tensor, height, width):
  """Draws one affine transform and one brightness/contrast change per image.

  Args:
    seed: int [2], the stateless seed of this batch.
    batch: the number of images.
    height: image height (float32 scalar).
    width: image width (float32 scalar).

  Returns:
    (transforms float32 [batch, 8] in `ImageProjectiveTransformV3`'s layout,
    mapping output to input pixels; contrast [batch]; brightness [batch],
    both as fractions).
  """
  seeds = tf.random.experimental.stateless_split(seed, 5)

  def uniform(i, bound, center=0.0):
    return tf.random.stateless_uniform([batch], seeds[i], center - bound, center + bound)

  angle = uniform(0, MAX_ROTATION)
  zoom = uniform(1, MAX_ZOOM, center=1.0)
  shift_x, shift_y = uniform(2, MAX_SHIFT) * width, uniform(3, MAX_SHIFT) * height
  # Rotate and scale about the centre, then shift.
  cx, cy = (width - 1) / 2, (height - 1) / 2
  a0, a1 = tf.cos(angle) / zoom, -tf.sin(angle) / zoom
  b0, b1 = tf.sin(angle) / zoom, tf.cos(angle) / zoom
  a2 = cx - a0 * cx - a1 * cy - shift_x
  b2 = cy - b0 * cx - b1 * cy - shift_y
  zeros = tf.zeros([batch])
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  photometric = tf.random.stateless_uniform([2, batch], seeds[4], -MAX_PHOTOMETRIC, MAX_PHOTOMETRIC)
  return transforms, photometric[0], photometric[1]


def warp(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
  """Affine warp with bilinear sampling and zero fill, as gathers (XLA compiles it).

  The same result as `keras.ops.image.affine_transform(images, transforms)`
  (bilinear, constant fill 0) for affine transforms: each output pixel reads
  the four input pixels around where the transform sends it, a neighbour
  outside the image counting as 0.

  Args:
    images: float32 [batch, height, width, channels].
    transforms: float32 [batch, 8], the first 6 entries used (a0 a1 a2 b0 b1 b2):
      output (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2).

  Returns:
    The warped float32 images, the same shape.
  """
  shape = tf.shape(images)
  batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
  y, x = tf.meshgrid(
    tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
  )
  x, y = tf.reshape(x, [1, -1]), tf.reshape(y, [1, -1])  # [1, h * w]
  t = [transforms[:, i : i + 1] for i in range(6)]  # each [batch, 1]
  source_x = t[0] * x + t[1] * y + t[2]
  source_y = t[3] * x + t[4] * y + t[5]
  x0, y0 = tf.floor(source_x), tf.floor(source_y)
  flat = tf.reshape(images, [batch, height * width, channels])
  w, h = tf.cast(width, tf.float32), tf.cast(height, tf.float32)

  def read(xi, yi):  # [batch, h * w, channels]; 0 where (xi, yi) is outside the image
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    index = tf.cast(tf.clip_by_value(yi, 0, h - 1) * w + tf.clip_by_value(xi, 0, w - 1), tf.int32)
    return tf.gather(flat, index, batch_dims=1) * tf.cast(inside, images.dtype)[..., None]

  fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
  top = read(x0, y0) * (1 - fx) + read(x0 + 1, y0) * fx
  bottom = read(x0, y0 + 1) * (1 - fx) + read(x0 + 1, y0 + 1) * fx
  return tf.reshape(top * (1 - fy) + bottom * fy, shape)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Random rotation, shift, zoom (one warp), brightness and contrast of a 0-255 float batch.

  Args:
    images: float32 [batch, height, width, channels], 0-255.
    seed: int [2]: the same seed gives the same augmentation.

  Returns:
    float32 images, 0-255.
  """
  shape = tf.shape(images)
  height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  transforms, contrast, brightness = random_transforms(seed, shape[0], height, width)
  images = warp(images, transforms)
  contrast, brightness = contrast[:, None, None, None], brightness[:, None, None, None]
  mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
  images = (images - mean) * (1 + contrast) + mean + 255 * brightness
  return tf.clip_by_value(images, 0.0, 255.0)


@keras.saving.register_keras_serializable(package="txr")
class Augment(keras.layers.Layer):
  """uint8 images -> float32 0-255, augmented (and rounded) in training only (see `augment`).

  Outside training (evaluation, export, serving) the layer only casts. The
  random stream is a Keras `SeedGenerator` advanced once per training step,
  with the replica's id folded in: under a distribution strategy each replica
  augments its own batch differently, and a run is reproducible for a given
  seed. Keras saves a layer's weights only, and a `SeedGenerator`'s state is
  none of them: this layer saves it with them, so the backup of a run (and
  `model.keras`) carries the stream's position and a resumed run goes on with
  the augmentations an uninterrupted one draws.
  """

  def __init__(self, seed: int = 0, **kwargs):
    """Augments with the random stream of `seed`; computes in float32 under any policy."""
    kwargs["dtype"] = "float32"  # coordinates need float32 precision; the model casts after
    super().__init__(**kwargs)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, images, training=None):
    """Casts `images` to float32 and, when training, augments them."""
    images = tf.cast(images, tf.float32)
    if not training:
      return images
    # Rounded to whole grey levels, as the tf.data pipeline before it fed the model (uint8)
    # and as the feature cache stores its views (issue 24).
    return tf.round(augment(images, self.next_seed()))

  def next_seed(self) -> tf.Tensor:
    """The seed of this step on this replica; advances the layer's stream."""
    seed = tf.cast(self.seed_generator.next(), tf.int64)
    replica = tf.distribute.get_replica_context()
    replica_id = 0 if replica is None else replica.replica_id_in_sync_group
    return seed + tf.stack([tf.constant(0, tf.int64), tf.cast(replica_id, tf.int64) * 2**32])

  def save_own_variables(self, store):
    """Saves the random stream's state (the layer has no weights)."""
    store["0"] = self.seed_generator.state

  def load_own_variables(self, store):
    """Restores the random stream's state; a file saved before it was kept has none."""
    if len(store.keys()):
      self.seed_generator.state.assign(store["0"])

  def compute_output_shape(self, input_shape):
    """The input's shape."""
    return input_shape

  def get_config(self):
    """The layer's config: its seed."""
    return {**super().get_config(), "seed": self.seed}
