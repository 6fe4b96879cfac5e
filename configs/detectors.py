"""The other detectors on the shared backbone (``havic_jax.detectors``), tiny sizes.

Each config file (``consistency_tiny.py`` ...) calls :func:`tiny_detector_config`; the model
sizes, optimiser and data come from the tiny HAVIC configs, so every detector trains on the
synthetic corpus in minutes on a CPU and is scored by the same eval binary.
"""

from configs.tiny import tiny_config


def tiny_detector_config(name: str, stage: str):
  """``tiny_config(stage)`` (the tiny model and optimiser) training detector ``name`` on the
  train split, with validation AUC on the test split every 100 steps (keep-best by it)."""
  config = tiny_config(stage)
  config.detector.name = name
  config.data.split = "train"
  config.eval_every = 100
  config.checkpoint.best_metric = "eval/auc"
  config.image_every = 0
  return config
