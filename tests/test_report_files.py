"""An evaluation's files, written from a hand-made evaluation (no model)."""

import csv
import json
import math

from absl import logging
import numpy as np

from txr_model import evaluation
from txr_model import metrics
from txr_model import model_card
from txr_model import report_files


def test_json_safe_writes_nan_as_null(tmp_path):
  value = {"auc": math.nan, "ci": [math.nan, 0.5], "points": ({"x": 1.0},)}
  assert report_files.json_safe(value) == {"auc": None, "ci": [None, 0.5], "points": [{"x": 1.0}]}
  report_files.write_json(str(tmp_path / "m.json"), value)
  assert json.loads((tmp_path / "m.json").read_text()) == report_files.json_safe(value)


def _cases():
  return evaluation.Outputs(
    labels=np.array([0, 1, 1, 0]),
    scores=np.array([0.1, 0.8, 0.35, 1 / 3]),
    features=np.zeros((4, 2)),
    datasets=np.array(["a/512", "a/512", "b/512", "b/512"]),
    filenames=np.array(["n1.png", "p1.png", "p2.png", "n2.png"]),
  )


def test_scores_read_back_as_written(tmp_path):
  path, cases = str(tmp_path / "scores_test.csv"), _cases()
  report_files.write_scores(path, cases)
  with open(path) as f:
    rows = list(csv.reader(f))
  assert rows[0] == list(report_files.SCORE_COLUMNS)
  assert rows[2] == ["a/512", "p1.png", "1", "0.8"]
  labels, scores, datasets, filenames = report_files.read_scores(path)
  np.testing.assert_array_equal(labels, cases.labels)
  np.testing.assert_array_equal(scores, cases.scores)  # repr: every bit of each score
  np.testing.assert_array_equal(datasets, cases.datasets)
  np.testing.assert_array_equal(filenames, cases.filenames)


def test_write_report_writes_and_names_each_file(tmp_path, monkeypatch):
  cases = _cases()
  summary = metrics.summarize(cases.labels, cases.scores, cases.labels, cases.scores)
  described = {"dataset": "a/512+b/512", "split": "test", "n": 4}
  protocol = {"thresholds_from": {**described, "split": "validation"}, "evaluated": described}
  report = {"validation": summary, "test": summary, "protocol": protocol}
  scored = evaluation.Evaluation(report, cases, cases)
  logged = []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: logged.append(fmt % args))
  report_files.write_report(scored, "test", str(tmp_path / "logs"), str(tmp_path))
  assert json.loads((tmp_path / "metrics.json").read_text()) == report_files.json_safe(
    scored.report
  )
  assert len((tmp_path / "scores_test.csv").read_text().splitlines()) == 1 + 4
  card = (tmp_path / "MODEL_CARD.md").read_text()
  assert card == model_card.render(json.loads((tmp_path / "metrics.json").read_text()))
  for name in ("metrics.json", "MODEL_CARD.md", "scores_test.csv", "roc.png", "reliability.png"):
    assert f"Wrote {tmp_path / name}" in logged
  assert list((tmp_path / "logs" / "evaluation").glob("events.out.tfevents.*"))
