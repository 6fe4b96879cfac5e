"""HAVIC fine-tuning (deepfake classifier) at the paper's sizes, batch 32."""

from configs import common


def get_config():
  config = common.base_config("finetune")
  config.model = common.model_config()
  config.batch_size = 32
  config.num_steps = 50 * 500  # 50 epochs of the FakeAVCeleb training split at batch 32
  config.optimizer.restart_every_steps = 10 * 500
  return config
