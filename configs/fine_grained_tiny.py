"""Fine-grained inconsistency detector, tiny: the spatially-local head, fine-tuned with
temporally-local pseudo-fakes (probability 0.5)."""

from configs.detectors import tiny_detector_config


def get_config():
  config = tiny_detector_config("fine_grained", "finetune")
  config.pseudo_fakes.enabled = True
  return config
