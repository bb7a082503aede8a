r"""Classifies chest X-ray files with an exported txr model.

  txr-predict --export_dir=/tmp/txr_demo/model/export scans/ one.png [--format=json] [--explain]

Prints, per file, P(TB), the label at the saved threshold and the
out-of-distribution flag and score. Needs only TensorFlow and absl (of txr,
only the TensorFlow-only overlay.py): everything else is in the SavedModel and
its assets.extra/txr.json.
A bad file is reported by name and the others carry on; the exit code is 1
if any file failed.
"""

import csv
import io
import json
import os
import struct
import sys

from absl import app
from absl import flags
import tensorflow as tf

from txr_model import cli
from txr_model import overlay

_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The export/ folder of a txr-train run.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json", "csv"], "Output format.")
_EXPLAIN = flags.DEFINE_bool("explain", False, "Write a Grad-CAM overlay PNG per image.")
_EXPLAIN_DIR = flags.DEFINE_string("explain_dir", "txr_explain", "Where --explain writes.")

EXTENSIONS = (".png", ".jpg", ".jpeg")
# Copies, not imports: this module must not pull in TFDS or Keras code.
# Their sources of truth: txr_data.image_codec.MAX_PIXELS, the builders'
# ClassLabel names and txr_model.export.METADATA (a test checks they agree).
MAX_PIXELS = 100_000_000  # Far above any radiograph: larger is a decompression bomb.
LABELS = ("normal", "abnormal")
METADATA = "assets.extra/txr.json"


def find_images(paths: list[str]) -> list[str]:
  """Files as given, and the PNG/JPEG files under folders, sorted."""
  found = []
  for path in paths:
    if tf.io.gfile.isdir(path):
      for folder, _, files in tf.io.gfile.walk(path):
        found += sorted(os.path.join(folder, f) for f in files if f.lower().endswith(EXTENSIONS))
    else:
      found.append(path)
  return found


def _size(data: bytes) -> tuple[int, int]:
  """(height, width) from the header, without decoding; raises ValueError if unknown."""
  if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
    width, height = struct.unpack(">II", data[16:24])
    return height, width
  if data.startswith(b"\xff\xd8"):
    height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
    return int(height), int(width)
  raise ValueError("not a PNG or JPEG file")


def check_image(data: bytes) -> None:
  """Raises ValueError if `data` is not a decodable, reasonably sized PNG/JPEG."""
  if not data:
    raise ValueError("empty file")
  height, width = _size(data)
  if height * width > MAX_PIXELS:
    raise ValueError(f"{width} x {height} pixels is too large for a radiograph")
  try:
    tf.io.decode_image(data, expand_animations=False)
  except tf.errors.OpError as e:
    raise ValueError(f"cannot decode: {e.message}") from e


def predict_files(export_dir: str, files: list[str], explain_dir: str | None = None):
  """One result dict per file, in order; a failed file has an `error` instead of outputs."""
  model = tf.saved_model.load(export_dir)
  serve = model.signatures["serving_default"]
  if explain_dir:
    tf.io.gfile.makedirs(explain_dir)
  results, written = [], set()
  for path in files:
    result = {"file": path}
    try:
      with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
      check_image(data)
      out = serve(image_bytes=tf.constant([data]))
      result.update(
        probability=float(out["probability"][0]),
        label=LABELS[int(out["label"][0])],
        out_of_distribution=bool(out["out_of_distribution"][0]),
        ood_score=float(out["ood_score"][0]),
      )
      if explain_dir:
        heatmap = model.signatures["explain"](image_bytes=tf.constant([data]))["heatmap"][0]
        # scan.png and scan.jpg, or two folders' scan.png, must not overwrite each other.
        name = os.path.basename(path) + ".gradcam.png"
        while name in written:
          name = f"{len(written)}_{name}"
        written.add(name)
        result["explanation"] = os.path.join(explain_dir, name)
        with tf.io.gfile.GFile(result["explanation"], "wb") as f:
          f.write(tf.io.encode_png(overlay.overlay(data, heatmap)).numpy())
    except (ValueError, tf.errors.OpError) as e:
      result["error"] = str(getattr(e, "message", e)).splitlines()[0]
    results.append(result)
  return results


def format_results(results, fmt: str) -> str:
  """Renders `predict_files` results as an aligned table, CSV or JSON.

  Args:
    results: one dict per file, from `predict_files`.
    fmt: 'table', 'csv' or 'json'.

  Returns:
    The text to print.
  """
  columns = ["file", "probability", "label", "out_of_distribution", "ood_score", "error"]
  if fmt == "json":
    return json.dumps(results, indent=2)
  rows = [{c: r.get(c, "") for c in columns} for r in results]
  for row in rows:
    for key in ("probability", "ood_score"):
      if isinstance(row[key], float):
        row[key] = f"{row[key]:.4f}"
  if fmt == "csv":
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")
  widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(str(row[c]).ljust(widths[c]) for c in columns) for row in rows]
  return "\n".join(line.rstrip() for line in lines)


def main(argv):
  """Classifies the files and folders named on the command line; 1 if any failed."""
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Name image files or folders to classify.")
  if not tf.io.gfile.exists(os.path.join(_EXPORT_DIR.value, "saved_model.pb")):
    raise app.UsageError(f"--export_dir={_EXPORT_DIR.value} holds no saved_model.pb.")
  if _EXPLAIN.value:
    cli.check_folder_flag("explain_dir", _EXPLAIN_DIR.value)
  files = find_images(paths)
  if not files:
    raise app.UsageError(f"No PNG or JPEG files in {' '.join(paths)}.", exitcode=2)
  results = predict_files(_EXPORT_DIR.value, files, _EXPLAIN_DIR.value if _EXPLAIN.value else None)
  print(format_results(results, _FORMAT.value))
  if _FORMAT.value == "table":
    with tf.io.gfile.GFile(os.path.join(_EXPORT_DIR.value, METADATA)) as f:
      meta = json.load(f)
    print(
      f"label: abnormal when probability >= {meta['threshold']:.4f} (the"
      f" {meta['operating_point']} operating point, chosen on validation)"
    )
  failed = [r["file"] for r in results if "error" in r]
  if failed:
    print(f"txr-predict: {len(failed)} of {len(results)} file(s) failed.", file=sys.stderr)
  return 1 if failed else 0


def run():
  """Console-script entry point (txr-predict)."""
  cli.run(main, ("export_dir",))


if __name__ == "__main__":
  run()
