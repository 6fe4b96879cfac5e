"""HAVIC pretraining at the paper's sizes (243.1M reference tensors), batch 112."""

from configs import common


def get_config():
  config = common.base_config("pretrain")
  config.model = common.model_config()
  config.batch_size = 112
  config.num_steps = 200 * 400  # 200 epochs of LRS2 (about 45k clips) at batch 112
  return config
