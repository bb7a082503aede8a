"""local_cxr: a screening programme's own chest X-rays, from its manual dir.

The NLM builders know their archives by file name; a programme's films come
named by patient or study, labelled in a spreadsheet or by folder, often as
DICOM. This builder reads any of the layouts `films.py` describes and stores
the same features as the NLM builders (plus `site`, `view` and `date`), so
txr-evaluate's subgroups, cross-site evaluation and `a+b` training work on it
unchanged. Conversion is an Apache Beam pipeline (TFDS's way to scale a
build): `tfds build` runs it in-process by default, on several local
processes with `--beam_pipeline_options=direct_num_workers=N,
direct_running_mode=multi_processing`, or on Dataflow, Spark or Flink.
"""

import functools

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from txr_data import nlm_tb
from txr_data.local_cxr import films as films_lib


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for a site's own films (see films.py for the layouts)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: labels.csv, class folders or _0/_1 names."}
  BUILDER_CONFIGS = [
    nlm_tb.TbConfig(name="original", description="Source pixels, not resized."),
    nlm_tb.TbConfig(
      name="512", description="Longest side 512 px, aspect ratio kept.", max_side=512
    ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Put the films (PNG, JPEG or DICOM) in the manual dir in one of three layouts:
  a `{films_lib.CSV_NAME}` beside them (columns file,label and optionally
  {",".join(films_lib.CSV_COLUMNS[2:])}); class folders `normal/` and
  `abnormal/` (any case, any depth, as in lungs/Normal); or names ending
  _0 (normal) and _1 (abnormal).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=nlm_tb.features(
        np.uint8,
        site=tfds.features.Text(),
        view=tfds.features.ClassLabel(names=films_lib.VIEWS),
        date=tfds.features.Text(),
      ),
      supervised_keys=("image", "label"),
      homepage="https://github.com/txr/txr#your-own-films",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = dl_manager.manual_dir  # Raises naming the dir if missing or empty.
    _, found = films_lib.find(str(root))  # It logs the layout it found.
    by_split = nlm_tb.split_by_subject(found, lambda film: film.subject, root)
    for split, items in by_split.items():
      logging.info(
        "%s: %d films (%d abnormal); sex unknown for %d, age unknown for %d, view unknown for"
        " %d.",
        split, len(items), sum(f.label for f in items), sum(f.sex == "unknown" for f in items),
        sum(f.age < 0 for f in items), sum(f.view == "unknown" for f in items),
      )  # fmt: skip
    return {name: self._generate_examples(items) for name, items in by_split.items()}

  def _generate_examples(self, items: list[films_lib.Film]):
    """A Beam transform from the split's films to its (key, example) pairs."""
    beam = tfds.core.lazy_imports.apache_beam
    convert = functools.partial(films_lib.example, max_side=self.builder_config.max_side)
    return beam.Create(items) | beam.Map(convert)
