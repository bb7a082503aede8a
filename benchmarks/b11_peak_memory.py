r"""B11: peak memory of both predictors by input kind and size (issue 25).

  python -m benchmarks.b11_peak_memory --export_dir=/tmp/txr_demo/model/export \
    [--lite_python=/tmp/txr-lite/bin/python] [--sides=3000,10000] [--out=/tmp/txr_bench]

Writes one film-like image per kind (PNG 8- and 16-bit gray and RGB, JPEG gray
and colour, and a 12-bit DICOM at the first side), then scores each with
txr-predict (the SavedModel) and txr-predict-lite (the export's int8 variant),
one film per process, each reporting its own peak resident size (VmHWM).
Reported as the size with a 120-px film, and per input the peak and its
growth over that, in MiB per million pixels. The export needs its
int8 variant (txr-export-lite --variants=int8). 10000 x 10000 (100 Mpx, the
largest either path accepts) needs about 3 GB per process and a few GB to write.
"""

import io
import json
import os
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image

_EXPORT_DIR = flags.DEFINE_string("export_dir", "/tmp/txr_demo/model/export", "A txr export.")
_LITE_PYTHON = flags.DEFINE_string(
  "lite_python", sys.executable, "The Python of txr-predict-lite's environment."
)
_SIDES = flags.DEFINE_list("sides", ["3000"], "Square films' sides, in pixels.")
_OUT = flags.DEFINE_string("out", "/tmp/txr_bench", "Where b11_peak_memory.json goes.")


def _png(array: np.ndarray) -> bytes:
  """uint8 or uint16, gray [h, w] or RGB [h, w, 3]: TF writes 16-bit colour, Pillow does not."""
  import tensorflow as tf

  return tf.io.encode_png(array if array.ndim == 3 else array[..., None]).numpy()


def _film(side: int) -> np.ndarray:
  """[0, 1] float32: lungs either side of a bright spine, with grain.

  Not synthetic.chest_xray: its float64 grids take about 1.6 GB at 10000 px, and its
  uint8 output has no 12-bit range to write into the 16-bit and DICOM inputs.
  """
  y, x = (np.linspace(0, 1, side, dtype=np.float32) for _ in range(2))
  y, x = y[:, None], x[None, :]
  image = np.full((side, side), 0.6, np.float32)
  for centre in (0.3, 0.7):
    image[((x - centre) / 0.17) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1] = 0.25
  image += 0.3 * np.exp(-(((x - 0.5) / 0.04) ** 2))
  image += np.random.default_rng(0).normal(0, 0.02, image.shape).astype(np.float32)
  return np.clip(image, 0, 1)


def _jpeg(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def _inputs(folder: str, side: int, dicom: bool) -> dict:
  """{kind: path} of one film per kind at `side` x `side`."""
  film = _film(side)
  gray8, gray12 = (film * 255).astype(np.uint8), (film * 4095).astype(np.uint16)
  rgb8, rgb12 = (np.repeat(a[..., None], 3, -1) for a in (gray8, gray12))
  data = {
    "PNG, 8-bit gray": _png(gray8),
    "PNG, 16-bit gray": _png(gray12),
    "PNG, 8-bit RGB": _png(rgb8),
    "PNG, 16-bit RGB": _png(rgb12),
    "JPEG, gray": _jpeg(gray8),
    "JPEG, colour": _jpeg(rgb8),
  }
  if dicom:
    from txr_data.local_cxr import synthetic

    data["DICOM, 12-bit"] = synthetic.dicom_bytes(gray12)
  paths = {}
  for i, (kind, encoded) in enumerate(data.items()):
    paths[kind] = os.path.join(folder, f"{side}_{i}.{'dcm' if 'DICOM' in kind else 'png'}")
    with open(paths[kind], "wb") as f:
      f.write(encoded)
  return paths


# Runs a module as `python -m` would, then writes the process's VmHWM (its peak resident
# size since exec) to the file named by $B11_PEAK. The kernel's ru_maxrss is not used: it
# keeps the high-water mark of the forked parent's pages from before the exec.
_PEAK_WRAPPER = (
  "import atexit, os, runpy, sys\n"
  "def peak():\n"
  "  with open('/proc/self/status') as f:\n"
  "    kb = [line.split()[1] for line in f if line.startswith('VmHWM:')][0]\n"
  "  with open(os.environ['B11_PEAK'], 'w') as f:\n"
  "    f.write(kb)\n"
  "atexit.register(peak)\n"
  "sys.argv = sys.argv[1:]\n"
  "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def _run_peak_mib(python: str, module: str, args: list[str], folder: str) -> float:
  """Runs `python -m module args`; its peak resident size, in MiB (it must score every file)."""
  record = os.path.join(folder, "peak.txt")
  out = subprocess.run(
    [python, "-c", _PEAK_WRAPPER, module, *args, "--format=json"], capture_output=True,
    env={**os.environ, "B11_PEAK": record},
  )  # fmt: skip
  if out.returncode or any("error" in row for row in json.loads(out.stdout)):
    raise RuntimeError(f"{module} {args} failed: {out.stdout[-500:]} {out.stderr[-500:]}")
  with open(record) as f:
    return int(f.read()) / 1024


def main(argv):
  del argv
  export_dir = _EXPORT_DIR.value
  lite_model = os.path.join(export_dir, "model_int8.tflite")
  commands = {
    "txr-predict": (sys.executable, "txr_model.predict", [f"--export_dir={export_dir}"]),
    "txr-predict-lite": (_LITE_PYTHON.value, "txr_lite.predict", [f"--model={lite_model}"]),
  }
  results = {}
  with tempfile.TemporaryDirectory() as folder:
    small = os.path.join(folder, "small.png")
    with open(small, "wb") as f:
      f.write(_png((_film(120) * 255).astype(np.uint8)))
    base = {
      name: _run_peak_mib(python, module, [*args, small], folder)
      for name, (python, module, args) in commands.items()
    }
    print("With a 120-px film: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in base.items()))
    for i, side in enumerate(int(s) for s in _SIDES.value):
      for kind, path in _inputs(folder, side, dicom=i == 0).items():
        row = {}
        for name, (python, module, args) in commands.items():
          peak = _run_peak_mib(python, module, [*args, path], folder)
          growth = (peak - base[name]) / (side * side / 1e6)
          row[name] = {"peak_mib": round(peak), "mib_per_mpx": round(growth, 1)}
        results[f"{kind}, {side} x {side}"] = row
        cells = [f"{n} {r['peak_mib']} MiB ({r['mib_per_mpx']} MiB/Mpx)" for n, r in row.items()]
        print(f"{kind}, {side} x {side}: " + "; ".join(cells))
        os.remove(path)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "b11_peak_memory.json"), "w") as f:
    json.dump({"base_mib": base, "results": results}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
