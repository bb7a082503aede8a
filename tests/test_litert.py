"""litert.py's checks that need no conversion: a threshold that labels nothing is refused."""

import numpy as np

from txr_model import litert

LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_a_threshold_that_labels_nothing_is_named():
  good = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
  assert litert.degenerate(LABELS, good, 0.5) is None
  assert "below chance" in litert.degenerate(LABELS, good[::-1], 0.5)  # AUC 0
  assert "every validation film abnormal" in litert.degenerate(LABELS, good, 0.0)
  assert "every validation film abnormal" in litert.degenerate(LABELS, good, 0.1)
  assert "every validation film normal" in litert.degenerate(LABELS, good, 0.95)
