"""What a training run chooses by name (--backbone, --mode, --strategy), without TensorFlow.

txr-train's flags check a choice against these before TensorFlow loads, so a
mistyped flag is answered at once rather than after TensorFlow's import
(about 6 s); model.py and strategy.py build what was chosen.
"""

import dataclasses

MODES = ("two_phase", "end_to_end")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A Keras application as txr's base: how it is built, fed and fine-tuned.

  Attributes:
    application: the name of its keras.applications constructor.
    min_size: the smallest input side it takes.
    notop_weights: the file name of its ImageNet no-top weights (Keras's cache name).
    blocks: its top-level blocks (`model.block_ends`): the most --fine_tune_blocks
      can unfreeze, known before a model is built (the flags check it).
    mean: per RGB channel, subtracted after scaling to [0, 1] ('torch'
      preprocessing), or None for [-1, 1] scaling ('tf' preprocessing).
    std: per RGB channel, divided by after `mean`.
    kwargs: more arguments for `application`.
  """

  application: str
  min_size: int
  notop_weights: str
  blocks: int
  mean: tuple | None = None
  std: tuple | None = None
  kwargs: dict = dataclasses.field(default_factory=dict)


# Each application's own input scaling (keras.applications.<name>.preprocess_input) is done
# inside the model: InceptionV3 and MobileNetV3 take [-1, 1], DenseNet ImageNet's mean and std.
BACKBONES = {
  "inception_v3": Backbone(
    "InceptionV3",
    75,
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    blocks=11,
  ),
  "densenet121": Backbone(
    "DenseNet121",
    32,
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    blocks=5,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
  ),
  "mobilenet_v3_small": Backbone(
    "MobileNetV3Small",
    32,
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    blocks=11,
    kwargs={"include_preprocessing": False},  # txr scales to [-1, 1] itself, as for the others
  ),
}
DEFAULT_BACKBONE = "inception_v3"
