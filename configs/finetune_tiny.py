"""Tiny HAVIC fine-tuning: the classifier on the tiny model, seconds on a CPU."""

from configs import common
from configs.tiny import tiny_model


def get_config():
  config = common.base_config("finetune")
  config.model = tiny_model()
  config.batch_size = 8
  config.num_steps = 20
  config.log_every = 1
  config.optimizer.restart_every_steps = 100
  config.optimizer.pretrained_learning_rate = 1e-4
  config.optimizer.new_learning_rate = 1e-3
  return config
