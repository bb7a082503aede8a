r"""Exports a trained run to LiteRT (.tflite), for txr-predict-lite (txr-export-lite).

  txr-export-lite --model_dir=/tmp/txr_demo/model [--variants=int8,float16,float32]

Writes model_<variant>.tflite, .json and .ood.npz into <model_dir>/export/
(txr_model/litert.py says how each is made). Reads the run's dataset: int8 is
calibrated on training images, and every variant's thresholds and OOD
statistics are chosen on its own scores of the validation split.
"""

import os

from absl import app
from absl import flags

import txr_data  # noqa: F401  (registers the builders)
from txr_lite import contract
from txr_model import cli
from txr_model import litert
from txr_model import model_dir_lock
from txr_model import run_config
from txr_model import run_dir

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A txr-train output directory.")
_VARIANTS = flags.DEFINE_list(
  "variants", list(contract.VARIANTS), f"Which of {','.join(contract.VARIANTS)} to write."
)
_ALLOW_DEGENERATE = flags.DEFINE_bool(
  "allow_degenerate", False,
  "Write a variant whose threshold labels nothing (below chance, or every film one label).",
)  # fmt: skip
_CALIBRATION_IMAGES = flags.DEFINE_integer(
  "calibration_images", 300, "Training images that calibrate the int8 variant.", lower_bound=1
)


def main(argv):
  """Converts --model_dir's model and prints what it wrote."""
  del argv
  cli.check_folder_flag("model_dir", _MODEL_DIR.value)
  unknown = set(_VARIANTS.value) - set(contract.VARIANTS)
  if unknown or not _VARIANTS.value:
    raise app.UsageError(
      f"--variants={','.join(_VARIANTS.value)}: give some of {','.join(contract.VARIANTS)}."
    )
  try:  # It chooses each variant's thresholds in the interpreter: needed after the conversion.
    import ai_edge_litert.interpreter  # noqa: F401
  except ImportError:
    raise app.UsageError(
      "txr-export-lite needs the LiteRT interpreter, the `lite` extra: pip install '.[lite]'"
      " from a txr checkout (or pip install ai-edge-litert)."
    ) from None
  if not os.path.exists(os.path.join(_MODEL_DIR.value, run_dir.MODEL)):
    raise app.UsageError(f"--model_dir={_MODEL_DIR.value} holds no {run_dir.MODEL}.")
  try:
    trained = run_config.RunConfig.load(_MODEL_DIR.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if trained is not None:  # Thresholds and calibration read its data: built, before any work.
    cli.check_built(trained.dataset, trained.data_dir)
  export_dir = os.path.join(_MODEL_DIR.value, run_dir.EXPORT)
  cli.check_writable(export_dir, export_dir)
  try:  # txr-train may be rewriting model.keras and export/: one command at a time.
    with model_dir_lock.hold(_MODEL_DIR.value):
      written = litert.export_lite(
        _MODEL_DIR.value, list(dict.fromkeys(_VARIANTS.value)), _CALIBRATION_IMAGES.value,
        allow_degenerate=_ALLOW_DEGENERATE.value,
      )  # fmt: skip
  except (ValueError, model_dir_lock.ModelDirInUseError) as e:
    raise app.UsageError(str(e)) from None
  for meta, path, size in written.values():
    chosen = meta.thresholds_from
    print(
      f"{path}  {size / 1e6:.1f} MB  validation AUC {chosen['auc']:.4f} (N={chosen['n']})"
      f"  {meta.operating_point} threshold {meta.threshold:.4f}"
    )
  return 0


def run():
  """Console-script entry point (txr-export-lite)."""
  cli.run(main, ("model_dir",))


if __name__ == "__main__":
  run()
