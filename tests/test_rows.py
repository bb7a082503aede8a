"""Printing predictions row by row (shared by txr-predict and txr-predict-lite)."""

import io
import json
import sys

from txr_lite import rows

RESULTS = [
  {"file": "a.png", "probability": 0.91234, "label": "abnormal", "out_of_distribution": False,
   "ood_score": 0.5},
  {"file": "bad.png", "error": "not a PNG or JPEG file"},
]  # fmt: skip


def _printed(fmt, results=RESULTS):
  out = io.StringIO()
  printer = rows.Printer(fmt, [r["file"] for r in results], out)
  lengths = []
  for result in results:
    printer.add(result)
    lengths.append(len(out.getvalue()))
  printer.close()
  assert lengths[0] > 0 and lengths[1] > lengths[0]  # Each row is out before the next comes.
  return out.getvalue()


def test_prints_table_csv_and_json_row_by_row():
  table = _printed("table").splitlines()
  assert table[0].split() == ["file", "probability", "label", "out_of_distribution", "ood_score",
                              "error"]  # fmt: skip
  assert table[1].split() == ["a.png", "0.9123", "abnormal", "False", "0.5000"]
  assert table[2].split()[0] == "bad.png" and table[2].endswith("not a PNG or JPEG file")
  assert table[1].index("abnormal") == table[0].index("label")  # aligned
  rows = _printed("csv").splitlines()
  assert rows[1] == "a.png,0.9123,abnormal,False,0.5000,"
  assert json.loads(_printed("json")) == RESULTS


def test_the_exit_code_counts_failed_files_and_a_gone_reader_ends_quietly(
  capsys, monkeypatch, tmp_path
):
  assert rows.run_rows("txr-x", 3, lambda: 0) == 0
  assert rows.run_rows("txr-x", 3, lambda: 2) == 1
  assert "txr-x: 2 of 3 file(s) failed." in capsys.readouterr().err

  def gone():
    raise BrokenPipeError

  silenced = []
  stdout = open(tmp_path / "stdout", "w")  # a real file descriptor, not pytest's capture
  monkeypatch.setattr(sys, "stdout", stdout)
  monkeypatch.setattr(rows.os, "dup2", lambda *args: silenced.append(args))
  assert rows.run_rows("txr-x", 3, gone) == 1
  assert [fd for _, fd in silenced] == [stdout.fileno()]  # Python's flush at exit is quiet
  stdout.close()


def test_score_percent_adds_the_0_to_100_column():
  import io

  from txr_lite import rows

  out = io.StringIO()
  printer = rows.Printer("csv", ["a.png", "b.png"], out=out, score="percent")
  printer.add({"file": "a.png", "probability": 0.8766, "label": "abnormal",
               "out_of_distribution": False, "ood_score": 0.2})  # fmt: skip
  printer.add({"file": "b.png", "error": "not a PNG, JPEG or DICOM file"})
  lines = out.getvalue().splitlines()
  assert lines[0] == "file,probability,score,label,out_of_distribution,ood_score,error"
  assert lines[1] == "a.png,0.8766,87.7,abnormal,False,0.2000,"
  assert lines[2] == 'b.png,,,,,,"not a PNG, JPEG or DICOM file"'
  assert printer.summary.lines("txr-predict") == [
    "txr-predict: 2 file(s): 1 scored, 1 (100.0%) read abnormal, 0 (0.0%) flagged out of"
    " distribution; refused 1 (50.0%) (unreadable or not a usable image: 1)."
  ]
