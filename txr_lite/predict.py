r"""Classifies chest X-ray files with a LiteRT export, without TensorFlow (txr-predict-lite).

  txr-predict-lite --model=run/export/model_int8.tflite scans/ one.png [--format=json]
      [--site=site_profile.json] [--min_age=15] [--explain]

Prints what txr-predict prints, row by row: per file, P(TB), the label at the
variant's own threshold (chosen on validation with its own scores), the
out-of-distribution flag and score, or the reason the file was refused. Reads
PNG and JPEG, and DICOM with pydicom installed. Needs only ai-edge-litert,
numpy and Pillow: the preprocessing (txr_lite.preprocess) reproduces the
SavedModel's serving graph. A bad file is reported by name and the others
carry on; the exit code is 1 if any file failed, 2 for a usage error.
"""

import argparse
import itertools
import os
import sys

from txr_lite import contract
from txr_lite import files as files_lib
from txr_lite import heatmap
from txr_lite import image_rules
from txr_lite import intake
from txr_lite import lite_model
from txr_lite import preprocess
from txr_lite import rows


def predict_files(
  variant: lite_model.Variant,
  paths: list[str],
  site: contract.SiteProfile | None = None,
  min_age: int = intake.MIN_AGE,
  explain_dir: str | None = None,
):
  """Yields one result dict per file, in order, as each is scored.

  Args:
    variant: the loaded LiteRT variant (`lite_model.load`).
    paths: the files to classify.
    site: a site profile whose threshold labels the films, or None (the variant's).
    min_age: DICOM films of younger patients are refused (0: no age check).
    explain_dir: where to write a heat-map overlay PNG per scored film, or None.

  Yields:
    {'file', 'probability', 'label', 'out_of_distribution', 'ood_score'} or
    {'file', 'error'} per file.
  """
  meta = variant.meta
  written = set()
  for path in paths:
    result = {"file": path}
    try:
      data, is_dicom = files_lib.read_file(path)
      if is_dicom:
        from txr_lite import dicom  # Only DICOM users need pydicom.

        refused = intake.refusal(data, min_age)
        if refused:
          raise ValueError(refused)
        gray = dicom.to_gray(data, image_rules.MAX_PIXELS)
        prepared = preprocess.prepare_array(gray, meta.image_size, meta.max_side)
      else:
        prepared = preprocess.prepare(data, meta.image_size, meta.max_side)
    except (OSError, ValueError) as e:
      result["error"] = str(e).splitlines()[0]
      yield result
      continue
    if explain_dir:
      probability, features, (class_map,) = variant.model.predict(prepared.image[None], True)
    else:
      probability, features = variant.model.predict(prepared.image[None])
    score = float(variant.detector.scores(features)[0])
    probability = float(probability[0])
    result.update(
      probability=probability,
      label=contract.LABELS[site.label(probability) if site else int(meta.label(probability))],
      out_of_distribution=bool(
        meta.out_of_distribution(
          score, prepared.colourfulness, prepared.aspect, prepared.polarity, prepared.smoothness
        )
      ),
      ood_score=score,
    )
    if explain_dir:
      # scan.png and scan.jpg, or two folders' scan.png, must not overwrite each other.
      name = os.path.basename(path) + ".gradcam.png"
      while name in written:
        name = f"{len(written)}_{name}"
      written.add(name)
      result["explanation"] = os.path.join(explain_dir, name)
      heat = heatmap.heatmap(class_map, meta.image_size)
      with open(result["explanation"], "wb") as f:
        f.write(heatmap.png(heatmap.overlay(prepared.image, heat)))
    yield result


def main(argv: list[str] | None = None) -> int:
  """Classifies the files and folders named on the command line; 1 if any failed."""
  parser = argparse.ArgumentParser(
    prog="txr-predict-lite", description=__doc__.splitlines()[0].rstrip(".")
  )
  parser.add_argument("--model", required=True, help="A model_<variant>.tflite of txr-export-lite.")
  parser.add_argument("--format", choices=["table", "json", "csv"], default="table")
  parser.add_argument(
    "--threads", type=int, default=None, help="CPU threads for the interpreter (default: all)."
  )
  parser.add_argument(
    "--site", help="A site_profile.json of txr-calibrate: label at this site's threshold."
  )
  parser.add_argument(
    "--min_age", type=int, default=intake.MIN_AGE,
    help="Refuse DICOM films of patients younger than this (PatientAge); 0: no age check.",
  )  # fmt: skip
  parser.add_argument(
    "--score", choices=rows.SCORES, default="probability",
    help="percent: also print P(TB) x 100 as `score`, the 0-100 scale CAD tools report.",
  )  # fmt: skip
  parser.add_argument(
    "--explain", action="store_true", help="Write a heat-map overlay PNG per scored film."
  )
  parser.add_argument("--explain_dir", default="txr_explain", help="Where --explain writes.")
  parser.add_argument("paths", nargs="+", metavar="FILE_OR_FOLDER")
  args = parser.parse_args(argv)
  if not os.path.exists(args.model):  # Also after txr-train exported its run again.
    parser.error(f"--model={args.model}: no such file (txr-export-lite writes the .tflite files).")
  if not os.path.isfile(args.model) or not args.model.endswith(".tflite"):
    parser.error(f"--model={args.model}: not a .tflite file (txr-export-lite writes them).")
  if args.threads is not None and args.threads < 1:
    parser.error(f"--threads={args.threads}: give 1 or more.")
  try:  # Every file of the variant, checked before any row is printed.
    variant = lite_model.load(args.model, args.threads)
  except contract.MetadataError as e:
    parser.error(str(e))
  except ValueError as e:  # The interpreter's own refusal of a .tflite it cannot load.
    parser.error(f"{args.model}: {str(e).splitlines()[0]}; export again with txr-export-lite.")
  if args.explain:
    if not variant.model.has_class_map:
      parser.error(
        f"{args.model} has no class_map output (exported by an earlier txr): export again with"
        " txr-export-lite for heat maps."
      )
    try:
      os.makedirs(args.explain_dir, exist_ok=True)
    except OSError as e:
      parser.error(f"--explain_dir={args.explain_dir}: {files_lib.reason(e)}")
  site = None
  if args.site:
    try:
      site = contract.SiteProfile.for_model(args.site, args.model)
    except OSError as e:
      parser.error(f"--site={args.site}: {files_lib.reason(e)}")
    except contract.MetadataError as e:
      parser.error(str(e))
  files, unreadable = files_lib.find_images(args.paths)
  if not files and not unreadable:
    parser.error(files_lib.no_images(args.paths))

  def print_rows() -> int:
    names = files + [r["file"] for r in unreadable]
    printer = rows.Printer(args.format, names, score=args.score, summary=summary)
    failed = 0
    explain_dir = args.explain_dir if args.explain else None
    predicted = predict_files(variant, files, site, args.min_age, explain_dir)
    for result in itertools.chain(unreadable, predicted):
      printer.add(result)
      failed += "error" in result
    printer.close()
    if args.format == "table":
      print((site or variant.meta).rule_text(), flush=True)
    return failed

  summary = rows.Summary()
  return rows.run_rows(
    "txr-predict-lite", len(files) + len(unreadable), print_rows,
    lambda: summary.lines("txr-predict-lite", site and site.expected_abnormal_share),
  )  # fmt: skip


def run():
  """Console-script entry point (txr-predict-lite)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
