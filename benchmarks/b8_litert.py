r"""B8: the LiteRT variants against the SavedModel: AUC parity, latency, cold start, memory, size.

  python -m benchmarks.b8_litert [--demo_dir=/tmp/txr_demo/model] \
    [--lite_python=/tmp/txr-lite/bin/python]

In one run, every model on the same images:
* AUC: the demo model on its test split (N = 114) and on the test split of
  B6's harder set (fainter lesions, varied anatomy; a shifted set the demo
  model never saw, so its AUC is below 1 and ranking errors show), scored by
  the SavedModel (its serving signature on the stored PNGs) and by the
  float32, float16 and int8 variants txr-export-lite writes, through
  txr-predict-lite's preprocessing; each with its 95% bootstrap CI, and each
  reduced variant minus float32 with a paired bootstrap CI.
* Latency at 299 px, the deployment size: the demo model's weights in a
  299-px network (InceptionV3 is fully convolutional), exported as txr-train
  exports and converted as txr-export-lite converts (int8 calibrated on 100
  training images: these copies are for timing only). Per image, from the
  file's bytes to P(TB) and the OOD score (decode, shrink, resize, network,
  Mahalanobis), one image at a time, with 1 and 2 threads, median and p95
  over --num_images full-size synthetic films (about 3000 x 3000) after 3
  warm-up images. Each in a process of its own; the lite ones in
  --lite_python's environment (default: this one, where they import no
  TensorFlow). The lite rows also time preprocessing and network apart; the
  SavedModel's network alone is approached by timing it on the films already
  preprocessed to 299-px PNGs (its graph then decodes 89 KB, not 9 MB).
* Cold start (process start to the first score printed) and peak RSS of
  txr-predict-lite (int8) and txr-predict on one film; file sizes; the lite
  environment's installed size (with --lite_python).
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from benchmarks import b6_learning_curve as b6
from benchmarks import synthetic
import txr_data  # noqa: F401  (registers the builders)
from txr_lite import contract
from txr_lite import lite_model
from txr_lite import preprocess
from txr_model import evaluation
from txr_model import export
from txr_model import input_pipeline
from txr_model import litert
from txr_model import metrics
from txr_model import model as model_lib
from txr_model import ood
from txr_model import run_config
from txr_model import run_dir

_DEMO_DIR = flags.DEFINE_string("demo_dir", "/tmp/txr_demo/model", "The README demo's run.")
_LITE_PYTHON = flags.DEFINE_string(
  "lite_python", sys.executable, "The Python of a txr-lite environment (pip install ./lite)."
)
_DEPLOY_SIZE = 299
_WARMUP = 3
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.FLAGS.set_default("num_images", 64)  # synthetic.py's full-size films: at least 50 timed.


def _examples(dataset: str, data_dir: str):
  """(stored PNG bytes, labels) of a dataset's test split, in dataset order."""
  config = input_pipeline.InputConfig(dataset, data_dir, 75, 32, split="test")
  data, labels = [], []
  for example in input_pipeline.examples(config, "test"):
    data.append(example["image"].numpy())
    labels.append(int(example["label"]))
  return data, np.array(labels)


def _harder_set(dataset: str) -> str:
  """B6's harder archive (fainter lesions, varied anatomy) built as `dataset`; its data_dir."""
  data_dir = os.path.join(synthetic.work_dir(), f"b8_harder_seed{b6._SEED.value}")
  builder = tfds.builder(dataset, data_dir=data_dir)
  if not builder.is_prepared():
    manual_dir = os.path.dirname(b6._archive())
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
  return data_dir


def _auc(labels, scores, seed=0) -> dict:
  low, high = metrics.bootstrap_auc_ci(labels, scores, seed=seed)
  return {"auc": round(metrics.roc_auc(labels, scores), 4), "auc_ci95": [low, high]}


def _paired_difference(labels, a, b, n=2000, seed=0) -> list:
  """95% CI of AUC(a) - AUC(b) over stratified resamples of the same images."""
  rng = np.random.default_rng(seed)
  pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  diffs = []
  for _ in range(n):
    i = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
    diffs.append(metrics.roc_auc(labels[i], a[i]) - metrics.roc_auc(labels[i], b[i]))
  return [round(float(q), 4) for q in np.quantile(diffs, [0.025, 0.975])]


def _parity(export_dir: str, variants: dict, examples) -> dict:
  """Test AUC of the SavedModel and each lite variant on the same stored images."""
  data, labels = examples
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  batches = [tf.constant(data[i : i + 32]) for i in range(0, len(data), 32)]
  scores = {"saved_model": np.concatenate([serve(image_bytes=b)["probability"] for b in batches])}
  for variant, path in variants.items():
    loaded = lite_model.load(path)
    meta = loaded.meta
    images = [preprocess.prepare(d, meta.image_size, meta.max_side).image for d in data]
    scores[variant] = loaded.model.predict(np.stack(images))[0]
  out = {"n": int(labels.size), "n_abnormal": int(labels.sum())}
  out.update({name: _auc(labels, s) for name, s in scores.items()})
  for variant in ("float16", "int8"):
    out[f"{variant}_minus_float32_ci95"] = _paired_difference(
      labels, scores[variant], scores["float32"]
    )
  out["float32_max_abs_difference_from_saved_model"] = float(
    np.max(np.abs(scores["float32"] - scores["saved_model"]))
  )
  return out


def _deployment_models(demo_dir: str, out_dir: str) -> dict:
  """The demo's weights at 299 px: a SavedModel and the three variants. {name: path}."""
  trained = keras.models.load_model(os.path.join(demo_dir, run_dir.MODEL))
  info = run_config.RunConfig.load(demo_dir)
  model = model_lib.build_model(_DEPLOY_SIZE, "none", mode="end_to_end", backbone=info.backbone)
  model.set_weights(trained.get_weights())
  base = input_pipeline.InputConfig(info.dataset, info.data_dir, _DEPLOY_SIZE, 32)
  train = evaluation.evaluation_configs(input_pipeline.run_splits(base))["train"]
  images, _ = litert.read_images(train, limit=100)
  features = model_lib.feature_extractor(model).predict(images, verbose=0)
  detector = ood.fit(features[:80], features[80:])
  max_side = input_pipeline.max_side(info.dataset, info.data_dir)
  paths = {"saved_model": os.path.join(out_dir, "export")}
  thresholds = {contract.TRIAGE: 0.5}
  meta = export.export_serving(
    model, paths["saved_model"], detector, thresholds, contract.TRIAGE, max_side=max_side
  )
  for variant, flatbuffer in litert.convert(model, contract.VARIANTS, images).items():
    files = contract.lite_files(out_dir, variant)
    litert.write_variant(files, dataclasses.replace(meta, variant=variant), flatbuffer, detector)
    paths[variant] = files.tflite
  return paths


def _films() -> list[str]:
  png_dir = os.path.join(synthetic.manual_dir(), "ChinaSet_AllFiles", "CXR_png")
  return sorted(os.path.join(png_dir, f) for f in os.listdir(png_dir))


def _timed(python: str, module: str, *args) -> dict:
  out = subprocess.run(
    [python, "-m", module, *map(str, args)], cwd=_REPO, check=True, capture_output=True, text=True
  )
  times = json.loads(out.stdout.strip().splitlines()[-1])
  summary = {
    "median_ms": round(float(np.median(times["latency_ms"])), 1),
    "p95_ms": round(float(np.percentile(times["latency_ms"], 95)), 1),
    "n": times["n"],
  }
  for part in ("preprocess", "network"):
    if f"{part}_ms" in times:
      summary[f"{part}_median_ms"] = round(float(np.median(times[f"{part}_ms"])), 1)
      summary[f"{part}_p95_ms"] = round(float(np.percentile(times[f"{part}_ms"], 95)), 1)
  return summary


def _file_list(paths: list[str]) -> str:
  file_list = os.path.join(tempfile.mkdtemp(), "films.txt")
  with open(file_list, "w") as f:
    f.write("\n".join(paths[:_WARMUP] + paths))  # The warm-up films are timed again later.
  return file_list


def _prepared_pngs(films: list[str], max_side: int) -> list[str]:
  """Each film as the 299-px PNG the network sees: the SavedModel's network time, near enough."""
  out_dir = tempfile.mkdtemp()
  paths = []
  for film in films:
    with open(film, "rb") as f:
      image = preprocess.prepare(f.read(), _DEPLOY_SIZE, max_side).image
    paths.append(os.path.join(out_dir, os.path.basename(film)))
    with open(paths[-1], "wb") as f:
      f.write(tf.io.encode_png(image).numpy())
  return paths


def _latency(paths: dict, films: list[str], max_side: int) -> dict:
  file_list = _file_list(films)
  prepared = _file_list(_prepared_pngs(films, max_side))
  out = {}
  for threads in (1, 2):
    timing = "benchmarks.saved_model_timing"
    row = {
      "saved_model": _timed(
        sys.executable, timing, paths["saved_model"], threads, file_list, _WARMUP
      ),
      "saved_model_on_299px_pngs": _timed(
        sys.executable, timing, paths["saved_model"], threads, prepared, _WARMUP
      ),
    }
    for variant in contract.VARIANTS:
      row[variant] = _timed(
        _LITE_PYTHON.value, "benchmarks.lite_timing", paths[variant], threads, file_list, _WARMUP
      )
    row["int8_speedup_over_saved_model"] = round(
      row["saved_model"]["median_ms"] / row["int8"]["median_ms"], 2
    )
    out[f"{threads}_thread{'s' if threads > 1 else ''}"] = row
  return out


# Runs a module as its console script does, then reports the process's own peak RSS (VmHWM: a
# child's ru_maxrss counts the parent it was forked from).
_WITH_PEAK_RSS = (
  "import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write(next(line for line in"
  " open('/proc/self/status') if line.startswith('VmHWM')))); sys.argv = sys.argv[1:];"
  " runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def _cold_start(python: str, module: str, flag: str, film: str) -> dict:
  """Seconds from process start to the first score printed, and the process's peak RSS."""
  start = time.perf_counter()
  process = subprocess.Popen(
    [python, "-c", _WITH_PEAK_RSS, module, flag, "--format=csv", film],
    cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
  )  # fmt: skip
  process.stdout.readline()  # The CSV header, printed before the model loads.
  first = process.stdout.readline()
  seconds = time.perf_counter() - start
  process.stdout.read()
  peak = [line for line in process.stderr.read().decode().splitlines() if "VmHWM" in line]
  if process.wait() or not first.startswith(film.encode()) or not peak:
    raise RuntimeError(f"{module} failed on {film}: {first!r}")
  return {"seconds": round(seconds, 2), "peak_rss_mb": round(int(peak[-1].split()[1]) / 1024)}


def _installed_mb(python: str) -> float | None:
  if python == sys.executable:
    return None
  prefix = subprocess.run(
    [python, "-c", "import sys; print(sys.prefix)"], check=True, capture_output=True, text=True
  ).stdout.strip()
  size = sum(
    os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(prefix) for f in files
  )
  return round(size / 1e6)


def main(argv):
  del argv
  demo_dir = _DEMO_DIR.value
  if not os.path.exists(os.path.join(demo_dir, run_dir.MODEL)):
    raise app.UsageError(f"--demo_dir={demo_dir}: run the README's demo first.")
  info = run_config.RunConfig.load(demo_dir)
  written = litert.export_lite(demo_dir)  # What the README's txr-export-lite writes.
  variants = {variant: path for variant, (_, path, _) in written.items()}
  export_dir = os.path.join(demo_dir, run_dir.EXPORT)
  figures = {
    "auc_demo_test": _parity(export_dir, variants, _examples(info.dataset, info.data_dir)),
    "auc_harder_b6_test": _parity(
      export_dir, variants, _examples(info.dataset, _harder_set(info.dataset))
    ),
  }
  print(json.dumps(figures), flush=True)
  films = _films()
  with tempfile.TemporaryDirectory() as out_dir:
    paths = _deployment_models(demo_dir, out_dir)
    max_side = input_pipeline.max_side(info.dataset, info.data_dir)
    figures["latency_299px"] = _latency(paths, films, max_side)
    figures["file_mb"] = {
      name: round(
        os.path.getsize(path) / 1e6
        if path.endswith(".tflite")
        else sum(
          os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs
        ) / 1e6,
        1,
      )
      for name, path in paths.items()
    }  # fmt: skip
    figures["cold_start"] = {
      "txr_predict_lite_int8": _cold_start(
        _LITE_PYTHON.value, "txr_lite.predict", f"--model={paths['int8']}", films[0]
      ),
      "txr_predict": _cold_start(
        sys.executable, "txr_model.predict", f"--export_dir={paths['saved_model']}", films[0]
      ),
    }
  figures["lite_environment_mb"] = _installed_mb(_LITE_PYTHON.value)
  figures["films"] = {"n": len(films), "side": synthetic._SIDE.value}
  synthetic.write_results("b8_litert", figures)


if __name__ == "__main__":
  app.run(main)
