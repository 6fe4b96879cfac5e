"""Tiny HAVIC fine-tuning: the classifier on the tiny model, seconds on a CPU."""

from configs.tiny import tiny_config


def get_config():
  return tiny_config("finetune")
