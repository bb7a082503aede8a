"""txr-calibrate as a site runs it: scores in, table, site profile and card out (no TensorFlow)."""

import csv
import json

import numpy as np
import pytest

from txr_lite import calibrate
from txr_lite import contract

SCORES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]  # tests/test_site_calibration.py's case
LABELS = [1, 1, 0, 1, 0, 0, 1, 0]


def _predictor_csv(path, rows):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "probability", "label", "out_of_distribution", "ood_score", "error"])
    writer.writerows(rows)


@pytest.fixture
def site(tmp_path):
  """A predictor's CSV of films in class folders, one refused file, and a model file."""
  rows = [[f"day1/{['normal', 'abnormal'][y]}/f{i}.png", s, "abnormal", "False", 0.5, ""]
          for i, (s, y) in enumerate(zip(SCORES, LABELS, strict=True))]  # fmt: skip
  rows.append(["day1/normal/bad.png", "", "", "", "", "not a PNG, JPEG or DICOM file"])
  _predictor_csv(tmp_path / "scores.csv", rows)
  (tmp_path / "model_int8.tflite").write_bytes(b"a network")
  return tmp_path


def _run(site, *extra):
  return calibrate.main([
    f"--scores={site / 'scores.csv'}", f"--model={site / 'model_int8.tflite'}",
    "--prevalence=0.1", f"--out={site / 'out'}", *extra,
  ])  # fmt: skip


def test_labels_from_folders_table_profile_and_card(site, capsys):
  assert _run(site) == 0
  out = capsys.readouterr().out
  assert "8 films (4 abnormal); 1 refused file(s) left out" in out
  assert "Chosen (WHO's triage target: the highest specificity with sensitivity at least" in out
  with open(site / "out" / "threshold_table.csv") as f:
    table = list(csv.DictReader(f))
  assert [float(r["threshold"]) for r in table] == SCORES
  chosen = next(r for r in table if float(r["threshold"]) == 0.2)
  assert float(chosen["referred_per_1000"]) == pytest.approx(775)
  profile = contract.SiteProfile.from_json(
    (site / "out" / "site_profile.json").read_text(), "site_profile.json"
  )
  assert (profile.threshold, profile.n, profile.n_abnormal, profile.prevalence) == (0.2, 8, 4, 0.1)
  assert profile.model["fingerprint"] == contract.model_fingerprint(str(site / "model_int8.tflite"))
  assert profile.expected_abnormal_share[0] == pytest.approx(0.775)
  low, high = profile.expected_abnormal_share[1:]
  assert low <= 0.775 <= high
  card = (site / "out" / "CALIBRATION.md").read_text()
  assert "Threshold: **0.2000**" in card and "775 referred" in card
  assert "too few films to show that it reaches 0.90" in card  # 4 abnormal films


def test_a_labels_csv_wins_and_gives_subgroups(site, capsys):
  labels = site / "labels.csv"
  lines = ["file,label,sex,age"] + [
    f"f{i}.png,{['normal', 'TB'][y]},{'FM'[i % 2]},{10 + 10 * i}" for i, y in enumerate(LABELS)
  ]  # fmt: skip
  labels.write_text("\n".join(lines) + "\n")
  assert _run(site, f"--labels={labels}", "--target_sensitivity=0.7") == 0
  out = capsys.readouterr().out
  assert "threshold 0.6000" in out
  assert "age under 15: N=1" in out and "sex f: N=4" in out


def test_txr_evaluate_scores_carry_their_labels(tmp_path, capsys):
  with open(tmp_path / "scores_all.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["dataset", "filename", "label", "score"])
    writer.writerows(["local_cxr/512", f"films/S{i}.png", y, s]
                     for i, (s, y) in enumerate(zip(SCORES, LABELS, strict=True)))  # fmt: skip
  (tmp_path / "export").mkdir()
  (tmp_path / "export" / "variables").mkdir()
  (tmp_path / "export" / "saved_model.pb").write_bytes(b"graph")
  code = calibrate.main([
    f"--scores={tmp_path / 'scores_all.csv'}", f"--model={tmp_path / 'export'}",
    "--prevalence=0.1", f"--out={tmp_path / 'out'}", "--max_referral_rate=0.2",
  ])  # fmt: skip
  assert code == 0
  profile = json.loads((tmp_path / "out" / "site_profile.json").read_text())
  assert profile["threshold"] == 0.8 and "at most 20.0%" in profile["rule"]


def test_usage_errors_name_the_file(site, capsys):
  _predictor_csv(site / "scores.csv", [["day1/f0.png", 0.5, "normal", "False", 0.5, ""]])
  with pytest.raises(SystemExit) as e:
    _run(site)
  assert e.value.code == 2
  assert "day1/f0.png: no reference label (1 film(s) lack one)" in capsys.readouterr().err


def test_a_profile_for_another_model_is_refused_naming_both():
  profile = contract.SiteProfile(
    model={"fingerprint": "sha256:" + "a" * 64, "path": "run/export"}, threshold=0.3,
    rule="r", n=10, n_abnormal=5, prevalence=0.1, sensitivity=[1, 0.5, 1],
    specificity=[1, 0.5, 1], expected_abnormal_share=[0.1, 0.05, 0.2], date="2026-12-06",
  )  # fmt: skip
  again = contract.SiteProfile.from_json(profile.to_json(), "p.json")
  assert again == profile
  with pytest.raises(contract.MetadataError, match=r"p.json was made for another model"):
    again.check_model("sha256:" + "b" * 64, "other/model_int8.tflite", "p.json")
  with pytest.raises(contract.MetadataError, match="not a txr site profile"):
    contract.SiteProfile.from_json("{}", "p.json")


def test_a_film_printed_at_the_site_threshold_is_abnormal():
  """txr-calibrate chose the threshold among printed (4-decimal) scores: 0.49986 prints as
  0.4999, the threshold; compared unrounded, it was labelled normal beside its printed score."""
  profile = contract.SiteProfile(
    model={"fingerprint": "sha256:" + "a" * 64}, threshold=0.4999, rule="r", n=10, n_abnormal=5,
    prevalence=0.1, sensitivity=[1, 0.5, 1], specificity=[1, 0.5, 1],
    expected_abnormal_share=[0.1, 0.05, 0.2], date="2026-12-06",
  )  # fmt: skip
  assert [profile.label(p) for p in (0.49986, 0.49984, 0.5, np.float32(0.49986))] == [1, 0, 1, 1]
