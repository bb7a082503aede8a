"""TFDS builders for the NLM tuberculosis chest X-ray sets.

Importing this package registers them, so `tfds.load('shenzhen_cxr')` works.
"""

import os

from txr_data import shenzhen_cxr

# The embedded synthetic sample in the real archive's layout (for demos/tests).
SAMPLE_DIR = os.path.join(os.path.dirname(__file__), "shenzhen_cxr", "dummy_data")

__all__ = ["SAMPLE_DIR", "shenzhen_cxr"]
