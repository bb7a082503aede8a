"""Keras InceptionV3 trainer, evaluation and prediction for txr."""
