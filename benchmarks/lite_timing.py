"""Times txr-predict-lite's path per image, file bytes to outputs; prints JSON (b8 runs it).

  python -m benchmarks.lite_timing MODEL.tflite THREADS FILE_LIST WARMUP

No TensorFlow: b8_litert runs it in the lite environment.
"""

import json
import sys
import time

from txr_lite import lite_model
from txr_lite import preprocess


def main(model_path: str, threads: str, file_list: str, warmup: str) -> None:
  variant = lite_model.load(model_path, int(threads))
  meta, detector, model = variant.meta, variant.detector, variant.model
  with open(file_list) as f:
    paths = f.read().split("\n")
  total, prepare, network = [], [], []
  for i, path in enumerate(paths):
    with open(path, "rb") as f:
      data = f.read()
    start = time.perf_counter()
    prepared = preprocess.prepare(data, meta.image_size, meta.max_side)
    prepared_at = time.perf_counter()
    _, features = model.predict(prepared.image[None])
    detector.scores(features)
    end = time.perf_counter()
    if i >= int(warmup):
      total.append(1000 * (end - start))
      prepare.append(1000 * (prepared_at - start))
      network.append(1000 * (end - prepared_at))
  times = {"latency_ms": total, "preprocess_ms": prepare, "network_ms": network}
  print(json.dumps({**times, "n": len(total)}))


if __name__ == "__main__":
  main(*sys.argv[1:])
