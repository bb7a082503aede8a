r"""Classifies chest X-ray files with an exported txr model.

  txr-predict --export_dir=/tmp/txr_demo/model/export scans/ one.png [--format=json] [--explain]

Prints, per file, P(TB), the label at the saved threshold and the
out-of-distribution flag and score, a batch of rows at a time. Reads PNG and
JPEG files, and DICOM (.dcm) with pydicom installed (from a checkout: pip install '.[dicom]').
Needs only TensorFlow and absl (of txr, the TensorFlow-only overlay.py, dicom.py
for DICOM, and what it shares with txr-predict-lite in txr_lite/): the checks,
decoding and everything else are in the SavedModel and its assets.extra/txr.json.
A bad file is reported by name and the others carry on; the exit code is 1
if any file failed.
"""

import itertools
import os

from absl import app
from absl import flags
import tensorflow as tf

from txr_lite import contract
from txr_lite import files as files_lib
from txr_lite import image_rules
from txr_lite import intake
from txr_lite import rows
from txr_model import cli
from txr_model import overlay

_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The export/ folder of a txr-train run.")
_FORMAT = flags.DEFINE_enum("format", "table", ["table", "json", "csv"], "Output format.")
_EXPLAIN = flags.DEFINE_bool("explain", False, "Write a Grad-CAM overlay PNG per image.")
_EXPLAIN_DIR = flags.DEFINE_string("explain_dir", "txr_explain", "Where --explain writes.")
_SCORE = flags.DEFINE_enum(
  "score", "probability", rows.SCORES,
  "percent: also print P(TB) x 100 as `score`, the 0-100 scale CAD tools report.",
)  # fmt: skip
_SITE = flags.DEFINE_string(
  "site", None, "A site_profile.json of txr-calibrate: label at this site's threshold."
)
_MIN_AGE = flags.DEFINE_integer(
  "min_age", intake.MIN_AGE,
  "Refuse DICOM films of patients younger than this (PatientAge); 0: no age check.", lower_bound=0,
)  # fmt: skip
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 8, "Images per call to the model; rows print as each batch ends.", lower_bound=1
)


def find_images(paths: list[str]) -> tuple[list[str], list[dict]]:
  """Files as given, and the PNG/JPEG/DICOM files under folders (local or gs://), sorted.

  See `txr_lite.files.find_images`.
  """
  return files_lib.find_images(paths, remote=tf.io.gfile)


def read_image(path: str, min_age: int = intake.MIN_AGE) -> bytes:
  """The bytes to send to the model: a PNG/JPEG as stored, a DICOM converted to PNG.

  Args:
    path: a local or gs:// file.
    min_age: a DICOM film of a younger patient is refused (0: no age check).

  Returns:
    Encoded PNG or JPEG bytes.

  Raises:
    ValueError: saying why the file cannot be used.
  """
  data, is_dicom = files_lib.read_file(path, remote=tf.io.gfile)
  if is_dicom:
    from txr_model import dicom  # Only DICOM users need pydicom.

    refused = intake.refusal(data, min_age)
    if refused:
      raise ValueError(refused)
    return dicom.to_png(data, image_rules.MAX_PIXELS)
  return data


def predict_files(export_dir: str, files: list[str], explain_dir: str | None = None,
                  batch_size: int = 8, site: contract.SiteProfile | None = None,
                  min_age: int = intake.MIN_AGE):  # fmt: skip
  """Yields one result dict per file, in order, a batch at a time.

  A failed file has an `error` instead of outputs: a file that cannot be read
  here, or an image the serving graph refused.

  Args:
    export_dir: a txr export folder.
    files: the files to classify.
    explain_dir: where to write Grad-CAM overlays, or None.
    batch_size: images per call to the model.
    site: a site profile whose threshold labels the films, or None (the export's).
    min_age: DICOM films of younger patients are refused (0: no age check).

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
        batch.append((results[-1], read_image(path, min_age)))
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
          label=contract.LABELS[
            site.label(out["probability"][i]) if site else int(out["label"][i])
          ],
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


def main(argv):
  """Classifies the files and folders named on the command line; 1 if any failed."""
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Name image files or folders to classify.")
  meta = read_metadata(_EXPORT_DIR.value)
  if _EXPLAIN.value:
    cli.check_folder_flag("explain_dir", _EXPLAIN_DIR.value)
  files, unreadable = find_images(paths)
  if not files and not unreadable:
    raise app.UsageError(files_lib.no_images(paths))
  explain_dir = _EXPLAIN_DIR.value if _EXPLAIN.value else None
  site = read_site(_SITE.value, _EXPORT_DIR.value) if _SITE.value else None
  summary = rows.Summary()
  return rows.run_rows(
    "txr-predict",
    len(files) + len(unreadable),
    lambda: _print_results(files, unreadable, explain_dir, meta, site, summary),
    lambda: summary.lines("txr-predict", site and site.expected_abnormal_share),
  )


def read_site(path: str, export_dir: str) -> contract.SiteProfile:
  """A site profile, checked to be this export's; a usage error otherwise."""
  try:
    return contract.SiteProfile.for_model(path, export_dir, remote=tf.io.gfile)
  except (OSError, tf.errors.OpError) as e:
    raise app.UsageError(f"--site={path}: {getattr(e, 'message', e)}") from None
  except contract.MetadataError as e:
    raise app.UsageError(str(e)) from None


def read_metadata(export_dir: str) -> contract.Metadata:
  """The export's metadata, read and checked once; a usage error if the export is incomplete."""
  if not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
    raise app.UsageError(f"--export_dir={export_dir} holds no saved_model.pb.")
  path = os.path.join(export_dir, contract.SAVED_MODEL_METADATA)
  if not tf.io.gfile.exists(path):
    raise app.UsageError(
      f"--export_dir={export_dir} has no {contract.SAVED_MODEL_METADATA}: the export is"
      " incomplete (killed while exporting?). Rerun the txr-train command to export again."
    )
  with tf.io.gfile.GFile(path, "rb") as f:
    text = f.read()
  try:
    return contract.Metadata.from_json(text, path)
  except contract.MetadataError as e:
    raise app.UsageError(str(e)) from None


def _print_results(files, unreadable, explain_dir, meta, site, summary) -> int:
  """Prints the unreadable folders' rows, then each file's; returns how many failed."""
  printer = rows.Printer(_FORMAT.value, files + [r["file"] for r in unreadable],
                         score=_SCORE.value, summary=summary)  # fmt: skip
  failed = 0
  predicted = predict_files(_EXPORT_DIR.value, files, explain_dir, _BATCH_SIZE.value, site,
                            _MIN_AGE.value)  # fmt: skip
  for result in itertools.chain(unreadable, predicted):  # Row by row, as each batch ends.
    printer.add(result)
    failed += "error" in result
  printer.close()
  if _FORMAT.value == "table":
    print((site or meta).rule_text(), flush=True)
  return failed


def run():
  """Console-script entry point (txr-predict)."""
  cli.run(main, ("export_dir",))


if __name__ == "__main__":
  run()
