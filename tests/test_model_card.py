"""The model card: regenerated from a metrics.json, every figure in it that file's."""

import json
import re

import numpy as np
import pytest

from txr_model import metrics
from txr_model import model_card


def _metrics_file(tmp_path):
  """A metrics.json as txr-train writes it, from scores whose subgroups are known."""
  rng = np.random.default_rng(0)
  n = 240
  labels = rng.integers(0, 2, n)
  sexes = np.where(rng.random(n) < 0.5, "female", "male")
  shift = np.where(sexes == "female", 0.6, 2.5)
  scores = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + labels * shift - shift / 2)))
  ages = np.array(["18-39"] * (n - 12) + ["60+"] * 12)  # 60+: too few
  val = (labels[:80], scores[:80])
  test = metrics.summarize(
    *val, labels, scores, n_resamples=200, attributes={"sex": sexes, "age": ages}
  )
  report = {
    "validation": metrics.summarize(*val, *val, n_resamples=200),
    "test": test,
    "protocol": {
      "thresholds_from": {"dataset": "shenzhen_cxr/512", "split": "validation", "n": 80},
      "evaluated": {"dataset": "shenzhen_cxr/512", "split": "test", "n": n},
    },
    "run": {
      "weights": "best: epoch 3, val AUC 0.9123",
      "dataset": "shenzhen_cxr/512",
      "dataset_version": "1.2.0",
      "mode": "end_to_end",
      "weights_init": "none",
      "image_size": 75,
      "epochs": 4,
      "seed": 0,
      "folds": 0,
      "training_data": {
        "train": {"n": 484, "label": {"abnormal": 242, "normal": 242}, "sex": {"female": 160}},
        "test": {"n": 114, "label": {"abnormal": 57, "normal": 57}, "age": {"60+": 3}},
      },
      "ood": {"threshold": 41.234, "quantile": 0.99, "n_train": 484, "n_validation": 64},
    },
  }
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(report))
  return path


def _floats(value):
  """Every float in a JSON value."""
  if isinstance(value, float):
    yield value
  elif isinstance(value, dict):
    for v in value.values():
      yield from _floats(v)
  elif isinstance(value, list):
    for v in value:
      yield from _floats(v)


def test_every_figure_in_the_card_is_in_the_metrics_file(tmp_path):
  report = json.loads(_metrics_file(tmp_path).read_text())
  card = model_card.render(report)
  front, body = card.split("\n---\n", 1)
  values = list(_floats(report))
  printed = {f"{v:{sign}.{d}f}" for v in values for d in (2, 3, 4) for sign in ("", "+")}
  words = body
  for text in (v for v in report["run"].values() if isinstance(v, str)):
    words = words.replace(text, "")  # Strings the card quotes, such as the dataset's version.
  for token in re.findall(r"(?:(?<!\d)[+-])?\d+\.\d+", words):  # 0.7-0.9: two figures
    assert token in printed, token  # Not one figure typed by hand, or computed elsewhere.
  for token in re.findall(r"value: (\S+)", front):
    assert float(token) in values, token
  test = report["test"]
  low, high = test["auc_ci95"]
  assert (
    f"- AUC {test['auc']:.3f} (95% CI {low:.3f}-{high:.3f}, stratified bootstrap) on"
    f" {test['n']} images ({test['n_positive']} abnormal)."
  ) in body
  female = test["subgroups"]["sex"]["female"]
  gap = female["gaps"]["tests"]["auc"]
  assert female["differs"] == "weaker"
  row = next(line for line in body.splitlines() if line.startswith("| sex | female |"))
  assert row.split(" | ")[2:5] == [
    str(female["n"]),
    str(female["n_positive"]),
    f"{female['auc']:.3f} ({female['auc_ci95'][0]:.3f}-{female['auc_ci95'][1]:.3f})",
  ]
  assert (
    f"{gap['value']:+.3f} ({gap['ci95'][0]:+.3f} to {gap['ci95'][1]:+.3f}), p {gap['p_holm']:.3f}"
  ) in row
  assert "- sex female is **weaker** than the rest of the split (" in body
  old = test["subgroups"]["age"]["60+"]
  assert old["too_few"] and f"| age | 60+ | {old['n']} | {old['n_positive']} | too few |" in body
  triage = test["operating_points"]["triage"]
  assert f"| WHO triage | {triage['threshold']:.4f} | {triage['sensitivity']:.3f} |" in body
  assert "| train | 484 | 242 | 242 |" in body and "best: epoch 3, val AUC 0.9123" in body
  assert "**Not a medical device**" in body and "Trained on one site (shenzhen_cxr/512)" in body
  assert "Cross-site" not in body


def test_the_card_opens_with_the_metadata_model_hubs_read(tmp_path):
  yaml = pytest.importorskip("yaml")
  report = json.loads(_metrics_file(tmp_path).read_text())
  report["protocol"]["evaluated"] = {"dataset": "montgomery_cxr/512", "split": "all", "n": 240}
  card = model_card.render(report)
  assert card.startswith("---\n")
  meta = yaml.safe_load(card.split("---\n")[1])
  assert meta["license"] == "apache-2.0" and "tuberculosis" in meta["tags"]
  assert meta["datasets"] == ["montgomery_cxr/512", "shenzhen_cxr/512"]
  result = meta["model-index"][0]["results"][0]
  assert result["dataset"]["name"] == "montgomery_cxr/512 all (N=240)"
  assert result["metrics"][0] == {"type": "roc_auc", "name": "AUC", "value": report["test"]["auc"]}
  assert "**Cross-site:** the model was evaluated on montgomery_cxr/512" in card
