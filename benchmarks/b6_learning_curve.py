r"""B6: held-out AUC against the number of training images, txr from scratch vs pixels.

  python -m benchmarks.b6_learning_curve [--sizes=50,100,200,400]

Generates one synthetic archive with all 662 of the archive's names, harder
than the demo's (patient-to-patient variation in position, size, exposure and
noise; fainter opacities), so a model has to find the lesions rather than
compare a fixed anatomy. For each size n it keeps the validation (64) and test
(114) images and n training images (half of each label), and runs the real
`txr-train --mode=end_to_end --weights=none` on them, in a subprocess, with
about 400 training steps whatever n (at most 60 epochs). The baseline, in the same run and on the
same split: L2-regularised logistic regression on 32 x 32 pixels (padded and
area-resized as txr pads), its penalty chosen on validation AUC. Both report
test AUC with a 95% bootstrap CI.
"""

import json
import math
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import synthetic
from txr_data import nlm_tb
from txr_data.shenzhen_cxr import shenzhen_cxr_dataset_builder as shenzhen
from txr_model import metrics
from txr_model import run_dir

_SIZES = flags.DEFINE_list("sizes", ["50", "100", "200", "400"], "Training-set sizes.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 80, "txr's input size, px.")
_STEPS = flags.DEFINE_integer(
  "steps", 400, "Training steps per run (epochs = steps / epoch, at most --max_epochs)."
)
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 60, "Caps the epochs of the smallest sets.")
_SEED = flags.DEFINE_integer("seed", 1, "Seed of the generated archive.")

BATCH = 16
GENERATOR = ["--num_images=662", "--lesion_contrast=0.15", "--nuisance=1.0"]


def _archive() -> str:
  root = os.path.join(synthetic.work_dir(), f"learning_curve_seed{_SEED.value}")
  if not os.path.exists(os.path.join(root, "done")):
    subprocess.run(
      [sys.executable, "-m", "txr_data.shenzhen_cxr.make_dummy_data", *GENERATOR]
      + [f"--seed={_SEED.value}", f"--out={root}"],
      check=True,
    )
    open(os.path.join(root, "done"), "w").close()
  return os.path.join(root, "ChinaSet_AllFiles")


def _subset(archive: str, n: int) -> tuple[str, dict[str, list[str]]]:
  """A manual dir with validation, test and n training images (hard links); stems by split."""
  images, _ = shenzhen.find_sources(archive)
  by_split = {"train": [], "validation": [], "test": []}
  for stem in sorted(images):
    by_split[nlm_tb.split_of(stem)].append(stem)
  train = [s for s in by_split["train"] if s.endswith("_0")][: n // 2]
  train += [s for s in by_split["train"] if s.endswith("_1")][: n - len(train)]
  by_split["train"] = train
  root = os.path.join(synthetic.work_dir(), f"learning_curve_seed{_SEED.value}_n{n}")
  png_dir = os.path.join(root, "ChinaSet_AllFiles", "CXR_png")
  if not os.path.isdir(png_dir):
    os.makedirs(png_dir)
    for stem in sum(by_split.values(), []):
      os.link(images[stem], os.path.join(png_dir, stem + ".png"))
  return root, {k: [images[s] for s in v] for k, v in by_split.items()}


def _pixels(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
  x = []
  for path in paths:
    image = tf.io.decode_png(tf.io.read_file(path), channels=1)
    small = tf.image.resize_with_pad(tf.cast(image, tf.float32), 32, 32, antialias=True)
    x.append(small.numpy().ravel() / 255.0)
  return np.array(x), np.array([shenzhen.label_of(p) for p in paths], np.float64)


def _logistic_regression(x, y, penalty, steps=1000, rate=0.5):
  """Gradient descent on the L2-penalised mean log loss; returns a scoring function."""
  mean, sd = x.mean(0), x.std(0) + 1e-6
  z = (x - mean) / sd
  w, b = np.zeros(z.shape[1]), 0.0
  for _ in range(steps):
    p = 1 / (1 + np.exp(-(z @ w + b)))
    w -= rate * (z.T @ (p - y) / len(y) + penalty * w)
    b -= rate * float(np.mean(p - y))
  return lambda x_new: ((x_new - mean) / sd) @ w + b


def _baseline(split_paths) -> dict:
  (x, y), (xv, yv), (xt, yt) = (_pixels(split_paths[k]) for k in ("train", "validation", "test"))
  fits = {p: _logistic_regression(x, y, p) for p in (1e-3, 1e-2, 1e-1, 1.0)}
  penalty = max(fits, key=lambda p: metrics.roc_auc(yv, fits[p](xv)))
  scores = fits[penalty](xt)
  low, high = metrics.bootstrap_auc_ci(yt, scores)
  return {"auc": metrics.roc_auc(yt, scores), "auc_ci95": [low, high], "penalty": penalty}


def _txr(manual_dir: str, n: int) -> dict:
  steps_per_epoch = max(1, n // BATCH)
  epochs = min(_MAX_EPOCHS.value, max(3, math.ceil(_STEPS.value / steps_per_epoch)))
  out = os.path.join(synthetic.work_dir(), f"learning_curve_seed{_SEED.value}_n{n}_run")
  start = time.time()
  subprocess.run(
    [sys.executable, "-m", "txr_model.train", "--mode=end_to_end", "--weights=none"]
    + [f"--image_size={_IMAGE_SIZE.value}", f"--global_batch_size={BATCH}", "--dropout=0.3"]
    + [f"--epochs={epochs}", f"--manual_dir={manual_dir}", "--mixed_precision=float32"]
    + [f"--data_dir={out}/data", f"--model_dir={out}/model"],
    check=True,
  )
  with open(os.path.join(out, "model", run_dir.METRICS)) as f:
    test = json.load(f)["test"]
  return {
    "auc": test["auc"],
    "auc_ci95": test["auc_ci95"],
    "epochs": epochs,
    "steps": epochs * steps_per_epoch,
    "seconds": round(time.time() - start),
  }


def main(argv):
  del argv
  archive = _archive()
  rows = []
  for n in (int(s) for s in _SIZES.value):
    manual_dir, split_paths = _subset(archive, n)
    row = {"train_images": n, "test_images": len(split_paths["test"])}
    row["logistic_regression_32px"] = _baseline(split_paths)
    row["txr_end_to_end"] = _txr(manual_dir, n)
    rows.append(row)
    print(json.dumps(row), flush=True)
  synthetic.write_results(
    "b6_learning_curve", {"generator": GENERATOR, "seed": _SEED.value, "rows": rows}
  )


if __name__ == "__main__":
  app.run(main)
