"""Tiny HAVIC pretraining: the same code path as the base model, seconds on a CPU."""

from configs.tiny import tiny_config


def get_config():
  return tiny_config("pretrain")
