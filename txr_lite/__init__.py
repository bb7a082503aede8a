"""txr without TensorFlow: what txr-predict-lite needs to score chest X-rays with LiteRT."""
