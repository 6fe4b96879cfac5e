"""Tiny HAVIC pretraining: the same code path as the base model, seconds on a CPU."""

from configs import common
from configs.tiny import tiny_model


def get_config():
  config = common.base_config("pretrain")
  config.model = tiny_model()
  config.batch_size = 8
  config.num_steps = 20
  config.log_every = 1
  config.optimizer.peak_learning_rate = 1e-3
  return config
