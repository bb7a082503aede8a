"""The run folder's layout: one set of names for what writes it and what reads it."""

import os

import pytest

from txr_model import run_dir


def test_fold_folders_are_named_and_parsed_back():
  assert run_dir.fold_name(3) == "fold_3" and run_dir.fold_name("<k>") == "fold_<k>"
  path = run_dir.fold_dir(os.path.join("runs", "cv"), 7)
  assert path == os.path.join("runs", "cv", "fold_7")
  assert run_dir.fold_index(path) == 7 and run_dir.fold_index(path + os.sep) == 7
  assert run_dir.fold_index("gs://bucket/cv/fold_12") == 12


@pytest.mark.parametrize("name", ["cv", "fold_", "fold_x", "fold_1a", "my_fold_1", "evaluation"])
def test_other_folders_are_not_folds(name):
  assert run_dir.fold_index(os.path.join("runs", name)) is None


def test_scores_worker_and_evaluation_paths():
  assert run_dir.scores_path("m", "test") == os.path.join("m", "scores_test.csv")
  assert run_dir.worker_dir("m", "worker", 1) == os.path.join("m", "worker_worker_1")
  site_a = run_dir.evaluation_dir("m", "a/512", "all", "/data/site_a")
  site_b = run_dir.evaluation_dir("m", "a/512", "all", "gs://b/site_b/")
  assert site_a != site_b and site_a.startswith(os.path.join("m", "evaluation", "a_512_all_"))
  assert run_dir.evaluation_dir("m", "a/512+b/512", "all") == os.path.join(
    "m", "evaluation", "a_512+b_512_all"
  )


def test_every_name_in_the_run_folder_is_in_the_readme():
  """The README's outputs tables are the user's map of a run folder: no name may drift."""
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
    readme = f.read()
  names = [run_dir.MODEL, run_dir.METRICS, run_dir.LOGS, run_dir.EXPORT, run_dir.FLAGFILE]
  names += [run_dir.BEST_WEIGHTS, run_dir.BACKUP, run_dir.CV_METRICS, run_dir.EVALUATION]
  missing = [name for name in names if f"`{name}" not in readme]
  assert not missing, missing
  assert run_dir.BEST_WEIGHTS.endswith(".weights.h5")  # Keras's required suffix
