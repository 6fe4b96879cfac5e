"""Tiny HAVIC pretraining: the same code path as the base model, seconds on a CPU."""

from configs.tiny import tiny_config


def get_config():
  config = tiny_config("pretrain")
  config.optimizer.peak_learning_rate = 1e-3
  return config
