"""Evaluation of the deepfake benchmarks: the videos of ``--data`` (videos), their window
inputs (inputs), window scoring on the mesh (scoring), per-video scores (per_video), the
paper's protocols (protocols), metrics and reports."""
