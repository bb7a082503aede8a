"""Evaluation, txr-predict and out-of-distribution rejection on a trained export.

Heavy: uses the session's trained (killed and resumed) run from conftest.
"""

import csv
import io
import json
import subprocess
import sys

from conftest import REPO
from conftest import run_ok
import numpy as np
import pytest
import tensorflow as tf

from txr_data.shenzhen_cxr import synthetic
from txr_model import predict

pytestmark = pytest.mark.heavy


def _png(array) -> bytes:
  return tf.io.encode_png(np.asarray(array, np.uint8)).numpy()


def test_evaluate_cli_takes_thresholds_from_validation(resumed_run):
  model_dir, _, _ = resumed_run
  out = run_ok([sys.executable, "-m", "txr_model.evaluate", f"--model_dir={model_dir}"])
  printed = json.loads(out.stdout[out.stdout.index("{") :])
  report = json.loads((model_dir / "metrics.json").read_text())
  assert printed == report["test"]
  for point in ("youden", "triage"):
    test_point = report["test"]["operating_points"][point]
    assert test_point["threshold"] == report["validation"]["operating_points"][point]["threshold"]
    assert sum(test_point[k] for k in ("tp", "fp", "tn", "fn")) == report["test"]["n"] == 10
  low, high = report["test"]["auc_ci95"]
  assert low <= report["test"]["auc"] <= high
  assert (model_dir / "roc.png").read_bytes().startswith(b"\x89PNG")


def test_tensorboard_has_curves_and_grad_cam_overlays(resumed_run):
  model_dir, _, _ = resumed_run
  tags = set()
  for path in (model_dir / "logs" / "evaluation").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  assert {"test/roc_curve", "test/pr_curve", "test/auc", "validation/grad_cam"} <= tags


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Held-out chest-X-ray-like images (a seed the sample never used), colour images, bad files."""
  folder = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(12345)
  for i in range(20):
    (folder / f"cxr_{i:02d}.png").write_bytes(
      _png(synthetic.chest_xray(rng, abnormal=bool(i % 2))[..., None])
    )
  y, x = np.mgrid[0:120, 0:160] / np.array([120.0, 160.0])[:, None, None]
  colour = {
    "gradient": np.stack([x, y, 1 - x], -1) * 255,
    "stripes": np.stack([np.sin(20 * x) > 0, np.cos(15 * y) > 0, x > 0.5], -1) * 255,
    "noise": rng.uniform(0, 255, (120, 160, 3)),
    "blobs": np.stack([np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) * 20)] * 3, -1) * [255, 180, 40],
  }
  for name, rgb in colour.items():
    (folder / f"colour_{name}.png").write_bytes(_png(rgb))
    (folder / f"colour_{name}.jpg").write_bytes(tf.io.encode_jpeg(np.uint8(rgb)).numpy())
  cxr = (folder / "cxr_00.png").read_bytes()
  (folder / "bad_truncated.png").write_bytes(cxr[: len(cxr) // 2])
  (folder / "bad_text.png").write_bytes(b"this is not an image\n")
  header = cxr[:16] + (200_000).to_bytes(4, "big") * 2 + cxr[24:]
  (folder / "bad_huge.png").write_bytes(header)
  (folder / "sixteen_bit.png").write_bytes(
    tf.io.encode_png(np.uint16(np.linspace(0, 65535, 90 * 100).reshape(90, 100, 1))).numpy()
  )
  return folder


def test_ood_flags_colour_images_and_passes_held_out_xrays(resumed_run, inputs):
  model_dir, _, _ = resumed_run
  files = predict.find_images([str(inputs)])
  results = {r["file"].rsplit("/", 1)[-1]: r for r in predict.predict_files(
    str(model_dir / "export"), [f for f in files if "bad" not in f]
  )}  # fmt: skip
  colour = [r for name, r in results.items() if name.startswith("colour_")]
  xrays = [r for name, r in results.items() if name.startswith("cxr_")]
  assert len(colour) == 8 and len(xrays) == 20
  colour_rate = np.mean([r["out_of_distribution"] for r in colour])
  xray_rate = np.mean([r["out_of_distribution"] for r in xrays])
  print(f"OOD flagged: colour images {colour_rate:.0%}, held-out X-ray-like {xray_rate:.0%}")
  assert colour_rate == 1.0
  assert xray_rate <= 0.2
  assert all(0.0 <= r["probability"] <= 1.0 for r in results.values())


def test_predict_cli_reports_bad_files_and_carries_on(resumed_run, inputs, tmp_path):
  model_dir, _, _ = resumed_run
  base = [sys.executable, "-m", "txr_model.predict", f"--export_dir={model_dir / 'export'}"]
  explain_dir = tmp_path / "explain"
  out = subprocess.run(
    [*base, "--format=json", "--explain", f"--explain_dir={explain_dir}", str(inputs)],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 1, out.stderr[-3000:]
  results = {r["file"].rsplit("/", 1)[-1]: r for r in json.loads(out.stdout)}
  assert len(results) == 20 + 8 + 3 + 1
  errors = {name: r["error"] for name, r in results.items() if "error" in r}
  assert set(errors) == {"bad_truncated.png", "bad_text.png", "bad_huge.png"}
  assert "too large" in errors["bad_huge.png"] and "not a PNG or JPEG" in errors["bad_text.png"]
  assert "3 of 32 file(s) failed" in out.stderr
  assert results["sixteen_bit.png"]["label"] in ("normal", "abnormal")
  overlay = tf.io.decode_png((explain_dir / "cxr_03.png.gradcam.png").read_bytes())
  assert overlay.shape == (75, 75, 3)
  assert len(list(explain_dir.glob("*.png"))) == 29

  table = run_ok([*base, str(inputs / "cxr_01.png"), str(inputs / "colour_noise.jpg")]).stdout
  assert table.splitlines()[0].split()[:3] == ["file", "probability", "label"]
  assert len(table.splitlines()) == 4
  assert table.splitlines()[-1].startswith("label: abnormal when probability >= ")
  rows = list(
    csv.DictReader(io.StringIO(run_ok([*base, "--format=csv", str(inputs / "cxr_01.png")]).stdout))
  )
  assert rows[0]["out_of_distribution"] in ("True", "False") and float(rows[0]["probability"]) >= 0
