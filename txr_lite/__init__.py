"""The TensorFlow-free half of txr-predict-lite: numpy and Pillow (pydicom for DICOM) only.

Its preprocessing reproduces the serving graph's (txr_model/decode.py) so a
LiteRT export of the model sees the pixels the SavedModel would.
"""
