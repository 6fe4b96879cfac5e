"""Tiny HAVIC fine-tuning: the classifier on the tiny model, seconds on a CPU."""

from configs.tiny import tiny_config


def get_config():
  config = tiny_config("finetune")
  config.optimizer.restart_every_steps = 100
  config.optimizer.pretrained_learning_rate = 1e-4
  config.optimizer.new_learning_rate = 1e-3
  return config
