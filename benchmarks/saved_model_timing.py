"""Times the SavedModel's serving signature per image, file bytes to outputs; prints JSON.

  python -m benchmarks.saved_model_timing EXPORT_DIR THREADS FILE_LIST WARMUP

A process of its own per thread count: TensorFlow fixes its thread pools at start.
"""

import json
import sys
import time


def main(export_dir: str, threads: str, file_list: str, warmup: str) -> None:
  import tensorflow as tf

  tf.config.threading.set_intra_op_parallelism_threads(int(threads))
  tf.config.threading.set_inter_op_parallelism_threads(int(threads))
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  with open(file_list) as f:
    paths = f.read().split("\n")
  total = []
  for i, path in enumerate(paths):
    with open(path, "rb") as f:
      data = tf.constant([f.read()])
    start = time.perf_counter()
    out = serve(image_bytes=data)
    out["probability"].numpy()
    end = time.perf_counter()
    if i >= int(warmup):
      total.append(1000 * (end - start))
  print(json.dumps({"latency_ms": total, "n": len(total)}))


if __name__ == "__main__":
  main(*sys.argv[1:])
