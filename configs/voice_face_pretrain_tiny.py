"""Voice–face matching (VFD) pretraining, tiny: identity classifiers and the voice–face InfoNCE
on real clips, batches of 4 identities × 2 clips from different videos."""

from configs.detectors import tiny_detector_config


def get_config():
  config = tiny_detector_config("voice_face", "pretrain")
  config.data.clips_per_identity = 2
  return config
