r"""Classifies chest X-ray files with an exported txr model.

  txr-predict --export_dir=/tmp/txr_demo/model/export scans/ one.png [--format=json] [--explain]

Prints, per file, P(TB), the label at the saved threshold and the
out-of-distribution flag and score, a batch of rows at a time. Reads PNG and
JPEG files, and DICOM (.dcm) with the optional extra: pip install 'txr[dicom]'.
Needs only TensorFlow and absl (of txr, only the TensorFlow-only overlay.py,
and dicom.py for DICOM): the checks, decoding and everything else are in the
SavedModel and its assets.extra/txr.json.
A bad file is reported by name and the others carry on; the exit code is 1
if any file failed.
"""

import csv
import io
import itertools
import json
import os
import stat
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
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 8, "Images per call to the model; rows print as each batch ends.", lower_bound=1
)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
# Copies, not imports: this module must not pull in TFDS or Keras code.
# Their sources of truth: txr_data.image_codec.MAX_PIXELS, PNG_SIGNATURE and
# JPEG_SIGNATURE, the builders' ClassLabel names and txr_model.export.METADATA
# (a test checks they agree).
MAX_PIXELS = 100_000_000  # Far above any radiograph: larger is a decompression bomb.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
LABELS = ("normal", "abnormal")
METADATA = "assets.extra/txr.json"
# A 100 Mpx 16-bit PNG stored uncompressed is 200 MB; anything larger is not a radiograph.
MAX_BYTES = 256 * 2**20
_HEADER_BYTES = 4096
COLUMNS = ["file", "probability", "label", "out_of_distribution", "ood_score", "error"]


def find_images(paths: list[str]) -> tuple[list[str], list[dict]]:
  """Files as given, and the PNG/JPEG/DICOM files under folders, sorted.

  Each real folder is walked once, so symlinks back up the tree (a self-link,
  two links to one folder) neither loop nor list an image twice. A folder that
  cannot be listed is reported, not fatal; names that are not UTF-8 are kept
  (as Python's `os` keeps them) and read by their bytes.

  Args:
    paths: files and folders (local or gs://).

  Returns:
    (the files to classify, in order; {'file', 'error'} per unreadable folder).
  """
  found, unreadable = [], []
  for path in paths:
    if not tf.io.gfile.isdir(os.fsencode(path)):
      found.append(path)
      continue

    def report(error, folder=path):
      where = getattr(error, "filename", None) or folder
      unreadable.append({"file": where, "error": _reason(error)})

    if "://" in path:  # Object stores have neither symlinks nor undecodable names.
      walk = tf.io.gfile.walk(path, onerror=report)
    else:
      walk = _walk_real_folders_once(path, report)
    for folder, _, files in walk:
      found += sorted(os.path.join(folder, f) for f in files if f.lower().endswith(EXTENSIONS))
  return found, unreadable


def _walk_real_folders_once(top: str, onerror):
  """`os.walk` following symlinks, but into each real folder once."""
  seen = {os.path.realpath(top)}
  for folder, folders, files in os.walk(top, onerror=onerror, followlinks=True):
    real = [(d, os.path.realpath(os.path.join(folder, d))) for d in sorted(folders)]
    folders[:] = [d for d, r in real if r not in seen and not seen.add(r)]
    yield folder, folders, files


def _reason(error: Exception) -> str:
  """An OSError's reason without the file name (the row names it), one line."""
  text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
  return f"cannot read: {text.splitlines()[0]}"


def display_name(path: str) -> str:
  """`path` printable as UTF-8: bytes that are not UTF-8 are shown as backslash escapes."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_dicom(path: str, header: bytes) -> bool:
  return header[128:132] == b"DICM" or path.lower().endswith(".dcm")


def _check_header(header: bytes) -> None:
  """Refuses what is not a PNG or JPEG, and PNGs without or with too many pixels, early."""
  if header.startswith(PNG_SIGNATURE):
    if len(header) < 24 or header[12:16] != b"IHDR":
      raise ValueError("truncated or corrupt PNG: no complete IHDR header")
    width, height = struct.unpack(">II", header[16:24])
    if not width * height:
      raise ValueError(f"{width} x {height} pixels: the PNG header declares an empty image")
    if width * height > MAX_PIXELS:
      raise ValueError(f"{width} x {height} pixels is too large for a radiograph")
  elif not header.startswith(JPEG_SIGNATURE):
    raise ValueError("not a PNG, JPEG or DICOM file")


def read_image(path: str) -> bytes:
  """The bytes to send to the model: a PNG/JPEG as stored, a DICOM converted to PNG.

  Only regular files are read (a FIFO or device would block forever), the
  header is checked before the rest is read, and the size is capped.

  Args:
    path: a local or gs:// file.

  Returns:
    Encoded PNG or JPEG bytes.

  Raises:
    ValueError: saying why the file cannot be used.
  """
  name = os.fsencode(path)  # Bytes: TensorFlow takes a name that is not UTF-8 only so.
  if "://" not in path:
    mode = os.stat(name).st_mode
    if not stat.S_ISREG(mode):
      raise ValueError("not a regular file")
  size = tf.io.gfile.stat(name).length
  if size == 0:
    raise ValueError("empty file")
  if size > MAX_BYTES:
    raise ValueError(f"{size} bytes is too large for a radiograph (limit {MAX_BYTES})")
  with tf.io.gfile.GFile(name, "rb") as f:
    header = f.read(_HEADER_BYTES)
    if _is_dicom(path, header):
      from txr_model import dicom  # Only DICOM users need pydicom.

      return dicom.to_png(header + f.read(), MAX_PIXELS)
    _check_header(header)
    return header + f.read()


def predict_files(export_dir: str, files: list[str], explain_dir: str | None = None,
                  batch_size: int = 8):  # fmt: skip
  """Yields one result dict per file, in order, a batch at a time.

  A failed file has an `error` instead of outputs: a file that cannot be read
  here, or an image the serving graph refused.

  Args:
    export_dir: a txr export folder.
    files: the files to classify.
    explain_dir: where to write Grad-CAM overlays, or None.
    batch_size: images per call to the model.

  Yields:
    {'file', 'probability', 'label', 'out_of_distribution', 'ood_score'} or
    {'file', 'error'} per file.
  """
  model = tf.saved_model.load(export_dir)
  serve = model.signatures["serving_default"]
  if explain_dir:
    tf.io.gfile.makedirs(explain_dir)
  written = set()
  for start in range(0, len(files), batch_size):
    results, batch = [], []
    for path in files[start : start + batch_size]:
      results.append({"file": path})
      try:
        batch.append((results[-1], read_image(path)))
      except (OSError, ValueError, tf.errors.OpError) as e:
        results[-1]["error"] = str(getattr(e, "message", e)).splitlines()[0]
    if batch:
      data = tf.constant([b for _, b in batch])
      out = serve(image_bytes=data)
      explained = model.signatures["explain"](image_bytes=data) if explain_dir else None
      for i, (result, _) in enumerate(batch):
        error = out["error"][i].numpy().decode()
        if error:
          result["error"] = error
          continue
        result.update(
          probability=float(out["probability"][i]),
          label=LABELS[int(out["label"][i])],
          out_of_distribution=bool(out["out_of_distribution"][i]),
          ood_score=float(out["ood_score"][i]),
        )
        if explained is not None:
          # scan.png and scan.jpg, or two folders' scan.png, must not overwrite each other.
          name = os.path.basename(result["file"]) + ".gradcam.png"
          while name in written:
            name = f"{len(written)}_{name}"
          written.add(name)
          result["explanation"] = os.path.join(explain_dir, name)
          image = overlay.overlay(explained["image"][i], explained["heatmap"][i])
          with tf.io.gfile.GFile(result["explanation"], "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
    yield from results


class Printer:
  """Prints results as they come, as an aligned table, CSV or a JSON array."""

  def __init__(self, fmt: str, files: list[str], out=sys.stdout):
    """Starts the output.

    Args:
      fmt: 'table', 'csv' or 'json'.
      files: every file that will be printed (sets the table's first column).
      out: where to print.
    """
    self.fmt, self.out, self.count = fmt, out, 0
    # Fixed up front, so rows can print before all are known.
    self.widths = {c: max(len(c), 8) for c in COLUMNS[:-1]}
    self.widths["file"] = max(len(display_name(f)) for f in ["file", *files])
    if fmt == "json":
      self._print("[", end="")
    elif fmt == "csv":
      self._print(",".join(COLUMNS))
    else:
      self._row({c: c for c in COLUMNS})

  def _print(self, text, end="\n"):
    print(text, end=end, file=self.out, flush=True)

  def _row(self, row):
    line = "  ".join(str(row[c]).ljust(self.widths[c]) for c in COLUMNS[:-1])
    self._print(f"{line}  {row['error']}".rstrip())

  def add(self, result: dict) -> None:
    """Prints one result.

    Args:
      result: a dict from `predict_files`.
    """
    self.count += 1
    result = {**result, "file": display_name(result["file"])}
    if self.fmt == "json":
      self._print(("," if self.count > 1 else "") + "\n" + json.dumps(result), end="")
      return
    row = {c: result.get(c, "") for c in COLUMNS}
    for key in ("probability", "ood_score"):
      if isinstance(row[key], float):
        row[key] = f"{row[key]:.4f}"
    if self.fmt == "csv":
      buf = io.StringIO()
      csv.DictWriter(buf, COLUMNS, lineterminator="").writerow(row)
      self._print(buf.getvalue())
    else:
      self._row(row)

  def close(self) -> None:
    """Ends the output (the JSON array's bracket)."""
    if self.fmt == "json":
      self._print("\n]")


def main(argv):
  """Classifies the files and folders named on the command line; 1 if any failed."""
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Name image files or folders to classify.")
  if not tf.io.gfile.exists(os.path.join(_EXPORT_DIR.value, "saved_model.pb")):
    raise app.UsageError(f"--export_dir={_EXPORT_DIR.value} holds no saved_model.pb.")
  if not tf.io.gfile.exists(os.path.join(_EXPORT_DIR.value, METADATA)):
    raise app.UsageError(
      f"--export_dir={_EXPORT_DIR.value} has no {METADATA}: the export is incomplete (killed"
      " while exporting?). Rerun the txr-train command to export again."
    )
  if _EXPLAIN.value:
    cli.check_folder_flag("explain_dir", _EXPLAIN_DIR.value)
  files, unreadable = find_images(paths)
  if not files and not unreadable:
    raise app.UsageError(f"No PNG, JPEG or DICOM files in {' '.join(paths)}.")
  explain_dir = _EXPLAIN_DIR.value if _EXPLAIN.value else None
  try:
    failed = _print_results(files, unreadable, explain_dir)
  except BrokenPipeError:  # `txr-predict ... | head`: stop quietly, as Unix tools do.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit.
    return 1
  if failed:
    total = len(files) + len(unreadable)
    print(f"txr-predict: {failed} of {total} file(s) failed.", file=sys.stderr)
  return 1 if failed else 0


def _print_results(files: list[str], unreadable: list[dict], explain_dir: str | None) -> int:
  """Prints the unreadable folders' rows, then each file's; returns how many failed."""
  printer = Printer(_FORMAT.value, files + [r["file"] for r in unreadable])
  failed = 0
  predicted = predict_files(_EXPORT_DIR.value, files, explain_dir, _BATCH_SIZE.value)
  for result in itertools.chain(unreadable, predicted):  # Row by row, as each batch ends.
    printer.add(result)
    failed += "error" in result
  printer.close()
  if _FORMAT.value == "table":
    with tf.io.gfile.GFile(os.path.join(_EXPORT_DIR.value, METADATA)) as f:
      meta = json.load(f)
    print(
      f"label: abnormal when probability >= {meta['threshold']:.4f} (the"
      f" {meta['operating_point']} operating point, chosen on validation)",
      flush=True,
    )
  return failed


def run():
  """Console-script entry point (txr-predict)."""
  cli.run(main, ("export_dir",))


if __name__ == "__main__":
  run()
