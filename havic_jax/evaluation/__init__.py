"""Evaluation: window scoring, metrics and reports of the deepfake benchmarks."""
