"""The exporters' and predictors' contract: metadata round trip, its checks, the two rules."""

import dataclasses
import json

from conftest import metadata
import numpy as np
import pytest

from txr_lite import contract


def test_metadata_round_trips_and_spells_out_the_threshold_and_labels():
  meta = metadata(run={"dataset": "shenzhen_cxr/512", "test_auc": np.float64(0.9)})
  raw = json.loads(meta.to_json())
  assert raw["threshold"] == 0.5 and raw["labels"] == ["normal", "abnormal"]
  assert raw["format"] == contract.FORMAT and raw["run"]["test_auc"] == 0.9
  back = contract.Metadata.from_json(meta.to_json(), "txr.json")
  assert back == dataclasses.replace(meta, run={"dataset": "shenzhen_cxr/512", "test_auc": 0.9})


def test_the_label_rule_is_the_operating_points_threshold():
  meta = metadata(operating_point=contract.YOUDEN)  # youden 0.6, triage 0.5
  assert meta.threshold == 0.6
  assert meta.label(np.array([0.59, 0.6, 0.9])).tolist() == [False, True, True]
  assert "probability >= 0.6000 (the youden operating point" in meta.rule_text()
  lite = metadata(variant="int8")
  assert "(the int8 model's triage operating point, chosen on validation)" in lite.rule_text()


def test_the_out_of_distribution_rule():
  meta = metadata()  # colourfulness 10, aspect 0.5-2.0, polarity -20, smoothness 0.3
  flagged = meta.out_of_distribution(
    np.array([0.5, 1.01, 0.5, 0.5, 0.5, 0.5, 0.5]),
    np.array([0.0, 0.0, 10.5, 0.0, 0.0, 0.0, 0.0]),
    np.array([1.0, 1.0, 1.0, 0.49, 2.01, 1.0, 1.0]),
    np.array([90.0, 90.0, 90.0, 90.0, 90.0, -20.5, 90.0]),
    np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.29]),
  )
  assert flagged.tolist() == [False, True, True, True, True, True, True]
  assert not meta.out_of_distribution(1.0, 10.0, 2.0, -20.0, 0.3)  # the limits themselves pass


@pytest.mark.parametrize(
  "change, message",
  [
    ({"format": 5}, "metadata format 5, written by a newer txr than this one (it reads format 4)"),
    ({"format": 3}, "metadata format 3, written by an older txr; export again"),
    ({"format": None}, "metadata format None, written by an older txr"),
    ({"image_size": 0}, "image_size 0 is not a positive whole number"),
    ({"image_size": 75.5}, "image_size 75.5 is not a positive whole number"),
    ({"max_side": -1}, "max_side -1 is neither null nor a positive whole number"),
    ({"operating_point": "best"}, "operating_point 'best' is none of youden, triage"),
    ({"thresholds": {"youden": 0.5}}, "thresholds has no triage threshold"),
    ({"thresholds": {"triage": 1.5}, "threshold": 1.5}, "the triage threshold 1.5 is not a"),
    ({"threshold": 0.7}, "threshold 0.7 is not the triage threshold 0.5"),
    ({"labels": ["abnormal", "normal"]}, "labels ['abnormal', 'normal'], expected"),
    ({"ood_threshold": 0}, "ood_threshold 0 is not a positive number"),
    ({"max_colourfulness": "high"}, "max_colourfulness 'high' is not a number"),
    ({"min_polarity": float("nan")}, "min_polarity nan is not a number from -255 to 255"),
    ({"min_smoothness": 2}, "min_smoothness 2 is not a number from -1 to 1"),
    ({"aspect_range": [2.0, 0.5]}, "aspect_range [2.0, 0.5] is not [low, high]"),
    ({"variant": "int4"}, "variant 'int4' is none of saved_model, float32, float16, int8"),
    ({"variant": "int8"}, "files does not hold the SHA-256 of the .tflite and the .ood.npz"),
    ({"colour": True}, "unknown colour"),
    ({"image_size": None, "drop": "image_size"}, "missing image_size"),
  ],
)
def test_metadata_a_predictor_cannot_use_is_refused_in_one_line(change, message):
  raw = json.loads(metadata().to_json())
  raw.update({k: v for k, v in change.items() if k != "drop"})
  raw.pop(change.get("drop"), None)
  with pytest.raises(contract.MetadataError) as error:
    contract.Metadata.from_json(json.dumps(raw), "export/assets.extra/txr.json")
  text = str(error.value)
  assert text.startswith("export/assets.extra/txr.json: ") and message in text, text
  assert "\n" not in text


def test_a_variants_metadata_is_bound_to_its_network_and_detector():
  files = contract.lite_files("export", "int8")
  assert files == contract.LiteFiles(
    "export/model_int8.tflite", "export/model_int8.json", "export/model_int8.ood.npz"
  )
  meta = metadata(
    variant="int8", files={"tflite": contract.digest(b"net"), "ood": contract.digest(b"ood")}
  )
  meta.check_files(files, b"net", b"ood")
  with pytest.raises(contract.MetadataError, match="export/model_int8.ood.npz: not the file"):
    meta.check_files(files, b"net", b"another detector")
