"""Benchmarks of txr's data and training path (run by hand; see the README)."""
