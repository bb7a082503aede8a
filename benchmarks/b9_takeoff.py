r"""B9: how soon training from scratch takes off, over several seeds and two generated sets.

  python -m benchmarks.b9_takeoff [--seeds=0,1,2] [--epochs=8] [--label=now]

A from-scratch run is txr's only way to train where ImageNet weights cannot be
downloaded, and its takeoff varies from run to run: one seed says little.
For each generated set and each training seed this runs the real
`txr-train` with the demo's recipe (`--mode=end_to_end --weights=none`, 75 px,
batch 16, learning rate 1e-3) and records, from the epoch lines Keras prints,
the training loss, validation AUC and validation loss of every epoch (the
whole log is kept as `train.log` beside each run), the first epoch whose
validation AUC reaches 0.9 ("takeoff"), and the test AUC with its 95% CI and
N from metrics.json. The sets, each 662 films with the archive's names
(484 train, 64 validation, 114 test) and data seeds never used for tuning:

* `visible`: patient-to-patient variation in position, size, exposure and
  noise (`--nuisance=1`) and the default lesion contrast (0.35);
* `faint_female`: the old learning test's set: no variation, lesions at 0.35
  except in films read as female (0.04).

To measure another tree with the same benchmark (the release before a fix,
say), copy this file into that tree's `benchmarks/` and run it there with
another `--label`: the runs use whichever `txr_model` the working directory
holds.
"""

import json
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import synthetic

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (--seed of txr-train).")
_SETS = flags.DEFINE_list("sets", ["visible", "faint_female"], "Generated sets to train on.")
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Epochs of each run.")
_LABEL = flags.DEFINE_string("label", "now", "Names this tree's results (b9_takeoff_<label>.json).")
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Further txr-train flags, to try a variant.")

TAKEOFF_AUC = 0.9
SETS = {  # generator flags; the data seeds were never used for tuning
  "visible": ["--seed=31", "--nuisance=1.0"],
  "faint_female": ["--seed=2027", "--female_lesion_contrast=0.04"],
}
RECIPE = [  # configs/demo.cfg's recipe, without its paths and epochs
  "--mode=end_to_end", "--weights=none", "--image_size=75", "--global_batch_size=16",
  "--learning_rate=1e-3", "--weight_decay=1e-3", "--dropout=0.3", "--mixed_precision=float32",
]  # fmt: skip
_EPOCH_LINE = re.compile(r"^\d+/\d+ - \d+s - .*$", re.M)  # Keras's verbose=2 line of an epoch
_VALUE = re.compile(r"(\w+): ([0-9.e+-]+)")


def epoch_logs(log: str) -> list[dict[str, float]]:
  """{metric: value} of each epoch line Keras printed, whatever metrics and order it has."""
  return [{k: float(v) for k, v in _VALUE.findall(line)} for line in _EPOCH_LINE.findall(log)]


def _archive(name: str) -> str:
  root = os.path.join(synthetic.work_dir(), f"takeoff_{name}")
  if not os.path.exists(os.path.join(root, "done")):
    subprocess.run(
      [sys.executable, "-m", "txr_data.shenzhen_cxr.make_dummy_data", "--num_images=662"]
      + [*SETS[name], f"--out={root}"],
      check=True,
    )
    open(os.path.join(root, "done"), "w").close()
  return root


def takeoff(val_aucs: list[float]) -> int | None:
  """The first epoch (1-based) whose validation AUC reaches 0.9; None if none did."""
  return next((i + 1 for i, auc in enumerate(val_aucs) if auc >= TAKEOFF_AUC), None)


def _run(name: str, seed: int) -> dict:
  out = os.path.join(synthetic.work_dir(), f"takeoff_{name}_{_LABEL.value}_seed{seed}")
  start = time.time()
  done = subprocess.run(
    [sys.executable, "-m", "txr_model.train", *RECIPE, *_TRAIN_FLAGS.value]
    + [f"--epochs={_EPOCHS.value}", f"--seed={seed}", f"--manual_dir={_archive(name)}"]
    + [f"--data_dir={out}/data", f"--model_dir={out}/model", "--overwrite"],  # never resume
    capture_output=True,
    text=True,
    check=False,
  )
  if done.returncode:
    sys.stderr.write(done.stderr[-3000:])
    raise SystemExit(f"txr-train failed for {name} seed {seed}")
  with open(os.path.join(out, "train.log"), "w") as f:
    f.write(done.stdout + done.stderr)
  epochs = epoch_logs(done.stdout + done.stderr)
  if not epochs:
    raise SystemExit(f"No epoch lines in {out}/train.log: has Keras's log format changed?")
  with open(os.path.join(out, "model", "metrics.json")) as f:
    test = json.load(f)["test"]
  losses, val_aucs = [e["loss"] for e in epochs], [e["val_auc"] for e in epochs]
  return {
    "set": name, "seed": seed, "loss": losses, "val_auc": val_aucs,
    "val_loss": [e["val_loss"] for e in epochs],
    "takeoff_epoch": takeoff(val_aucs), "test_auc": test["auc"], "test_auc_ci95": test["auc_ci95"],
    "test_n": test["n"], "seconds": round(time.time() - start),
  }  # fmt: skip


def main(argv):
  del argv
  runs = []
  for name in _SETS.value:
    for seed in (int(s) for s in _SEEDS.value):
      runs.append(_run(name, seed))
      print(json.dumps(runs[-1]), flush=True)
  summary = {}
  for name in _SETS.value:
    mine = [r for r in runs if r["set"] == name]
    epochs = [r["takeoff_epoch"] for r in mine]
    summary[name] = {
      "takeoff_epochs": epochs,
      "all_took_off_within_5": all(e is not None and e <= 5 for e in epochs),
      "test_auc_mean": float(np.mean([r["test_auc"] for r in mine])),
    }
  synthetic.write_results(
    f"b9_takeoff_{_LABEL.value}",
    {"recipe": RECIPE + _TRAIN_FLAGS.value, "epochs": _EPOCHS.value, "sets": SETS,
     "summary": summary, "runs": runs},
  )  # fmt: skip


if __name__ == "__main__":
  app.run(main)
