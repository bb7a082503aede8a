r"""B10: building a site's films with local_cxr on 1 and 2 Beam worker processes.

  python -m benchmarks.b10_local_build [--num_images=200 --side=2500 --workers=1,2]

Generates `--num_images` PNG films `--side` px high (20 drawn, the rest
copies) in the `csv` layout once, then runs the real command, `tfds build
txr_data/local_cxr --config=512`, with Beam's DirectRunner on each number of worker processes
(`direct_num_workers=N,direct_running_mode=multi_processing`), timing the
whole command (start-up included) and, from it, films per second. The JSON
also holds the start-up cost (the same command on 10 films) so a larger
build's time can be projected: time(n) = start-up + n / rate.
"""

import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks import synthetic

_NUM_IMAGES = flags.FLAGS["num_images"]  # benchmarks.synthetic's: films to build.
_HEIGHT = flags.FLAGS["side"]  # Likewise: the films' height in px (widths vary +-15%).
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Beam worker processes to try.")


_DISTINCT = 20  # Films drawn; the rest are copies under other names (drawing 2500 px takes ~5 s).


def _films(n: int) -> str:
  """A csv-layout site of n films, `_DISTINCT` of them drawn and the rest copies of those."""
  import csv

  from txr_data.local_cxr import synthetic as site

  root = os.path.join(synthetic.work_dir(), f"b10_site_{n}_{_HEIGHT.value}")
  if os.path.exists(os.path.join(root, "done")):
    return root
  truth = site.write_site(root, min(n, _DISTINCT), "csv", "png", seed=10, height=_HEIGHT.value)
  with open(os.path.join(root, "labels.csv"), "a", newline="") as f:
    writer = csv.writer(f)
    for i in range(len(truth), n):
      row = truth[i % len(truth)]
      name = f"films/copy_{i:05d}.png"
      shutil.copy(os.path.join(root, row["file"]), os.path.join(root, name))
      writer.writerow([name, row["label"], f"C{i:05d}", row["sex"], row["age"], row["site"],
                       row["date"], row["view"]])  # fmt: skip
  open(os.path.join(root, "done"), "w").close()
  return root


def _build(manual_dir: str, workers: int) -> float:
  data_dir = os.path.join(synthetic.work_dir(), "b10_data")
  shutil.rmtree(data_dir, ignore_errors=True)
  tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
  command = [tfds_cli, "build", "txr_data/local_cxr", "--config=512",
             f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]  # fmt: skip
  if workers > 1:
    command.append(
      f"--beam_pipeline_options=direct_num_workers={workers},direct_running_mode=multi_processing"
    )
  start = time.perf_counter()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(command, capture_output=True, text=True, cwd=repo, check=False)
  if done.returncode:
    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
  if not os.path.isdir(os.path.join(data_dir, "local_cxr", "512", "1.0.0")):
    raise SystemExit(f"{' '.join(command)} left no finished dataset:\n{done.stderr[-3000:]}")
  return time.perf_counter() - start


def main(argv):
  del argv
  small, large = _films(10), _films(_NUM_IMAGES.value)
  runs = {}
  for workers in (int(w) for w in _WORKERS.value):
    startup = _build(small, workers)
    seconds = _build(large, workers)
    runs[workers] = {
      "seconds": round(seconds, 1),
      "startup_seconds_10_films": round(startup, 1),
      "films_per_second": round((_NUM_IMAGES.value - 10) / (seconds - startup), 2),
    }
  synthetic.write_results(
    "b10_local_build",
    {"num_images": _NUM_IMAGES.value, "height": _HEIGHT.value, "config": "512",
     "cpus": os.cpu_count(), "runs": runs},
  )  # fmt: skip


if __name__ == "__main__":
  app.run(main)
