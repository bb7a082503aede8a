"""The curves of an evaluation as images: ROC, precision-recall and the reliability diagram.

Drawn with matplotlib as PNG bytes, for the run folder and for TensorBoard;
without matplotlib (pip install 'txr[plot]') there are none.
"""

import io

from absl import logging
import tensorflow as tf

from txr_model import metrics

_MARKERS = {metrics.YOUDEN: "o", metrics.TRIAGE: "s"}  # Each operating point's on the ROC.


def plot_curves(val, ev, result: dict, split: str) -> dict[str, bytes]:
  """ROC (with the operating points), PR and reliability curves as PNG bytes; {} without matplotlib.

  Args:
    val: the validation split's cases (`labels` and `scores`: an `evaluation.Outputs`).
    ev: the evaluated split's cases, likewise.
    result: the evaluated split's `metrics.summarize` output.
    split: the evaluated split's name.

  Returns:
    {'roc', 'pr', 'reliability'}: PNG bytes.
  """
  try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
  except ImportError:
    logging.warning("matplotlib is not installed (pip install 'txr[plot]'): no roc.png.")
    return {}

  def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()

  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  fpr, tpr, _ = metrics.roc_curve(ev.labels, ev.scores)
  ax.plot(fpr, tpr, label=f"{split} (AUC {result['auc']:.3f})")
  fpr, tpr, _ = metrics.roc_curve(val.labels, val.scores)
  ax.plot(fpr, tpr, ":", label="validation")
  ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
  ax.axhline(metrics.WHO_TRIAGE["sensitivity"], color="0.6", lw=0.6, ls="--")
  for name in metrics.OPERATING_POINTS:
    point = result["operating_points"][name]
    label = f"{name} (threshold {point['threshold']:.3f} from validation)"
    ax.plot(1 - point["specificity"], point["sensitivity"], _MARKERS[name], label=label)
  ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
  ax.set_title(f"ROC, {split} split")
  ax.legend(loc="lower right", fontsize=8)
  roc = png(fig)
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  precision, recall, _ = metrics.pr_curve(ev.labels, ev.scores)
  ax.plot(recall, precision)
  ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01))
  ax.set_title(f"Precision-recall, {split} split")
  pr = png(fig)
  fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
  ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, label="perfect calibration")
  curves = [(split, result["calibration"], "o-")]
  if split != "validation":
    curves.append(("validation", metrics.calibration(val.labels, val.scores), "s:"))
  for name, calibration, style in curves:
    filled = [b for b in calibration["bins"] if b["n"]]
    x = [b["mean_score"] for b in filled]
    y = [b["fraction_positive"] for b in filled]
    ax.plot(x, y, style, label=f"{name}: ECE {calibration['ece']:.3f}, N={calibration['n']}")
    if name == split:  # Each bin's count, for the evaluated split.
      for b in filled:
        ax.annotate(str(b["n"]), (b["mean_score"], b["fraction_positive"]), fontsize=7,
                    textcoords="offset points", xytext=(4, -10))  # fmt: skip
  ax.set(xlabel="mean predicted probability", ylabel="fraction abnormal", xlim=(0, 1))
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(
    f"Reliability, {split} split ({result['calibration']['num_bins']} equal bins;"
    " numbers: images per bin)",
    fontsize=9,
  )
  ax.legend(loc="upper left", fontsize=8)
  return {"roc": roc, "pr": pr, "reliability": png(fig)}


def summarize_curves(pngs: dict[str, bytes], split: str) -> None:
  """Writes `plot_curves`' images to the default TensorBoard writer, under `split`."""
  for name, png in pngs.items():
    tag = "reliability_diagram" if name == "reliability" else f"{name}_curve"
    tf.summary.image(f"{split}/{tag}", tf.io.decode_png(png, channels=3)[None], step=0)
