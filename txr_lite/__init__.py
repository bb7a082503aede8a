"""txr without TensorFlow: what txr-predict-lite needs, with numpy, Pillow and ai-edge-litert.

Its preprocessing reproduces the serving graph's (txr_model/decode.py), so a
LiteRT export of the model sees the pixels the SavedModel would; txr-predict
shares its file finding and row printing. Nothing here imports TensorFlow
(lite/pyproject.toml installs this package alone).
"""
