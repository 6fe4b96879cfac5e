"""Voice–face matching (VFD) fine-tuning, tiny: the Real-Fake Contrastive loss on labelled
clips. Start from a pretraining run with ``--config.init_from=PRETRAIN_WORKDIR`` (its encoders
and heads: ``havic_jax.training.loop`` loads the modules both models have)."""

from configs.detectors import tiny_detector_config


def get_config():
  return tiny_detector_config("voice_face", "finetune")
