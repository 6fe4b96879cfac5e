"""Intra-/cross-modal consistency detector, tiny: unsupervised training on real clips, batches of
4 identities × 2 clips from different videos."""

from configs.detectors import tiny_detector_config


def get_config():
  config = tiny_detector_config("consistency", "pretrain")
  config.data.clips_per_identity = 2
  return config
