"""TFDS builders for the NLM tuberculosis chest X-ray sets.

Importing this package registers them, so `tfds.load('shenzhen_cxr')`,
`tfds.load('montgomery_cxr')` and `tfds.load('local_cxr')` (a site's own
films) work.
"""

import os

from txr_data import local_cxr
from txr_data import montgomery_cxr
from txr_data import shenzhen_cxr

# The embedded synthetic samples in the real archives' layouts (for demos/tests).
SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "shenzhen_cxr", "dummy_data")
MONTGOMERY_SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "montgomery_cxr", "dummy_data")

__all__ = [
  "MONTGOMERY_SAMPLE_DIR", "SAMPLE_DIR", "local_cxr", "montgomery_cxr", "shenzhen_cxr",
]  # fmt: skip
