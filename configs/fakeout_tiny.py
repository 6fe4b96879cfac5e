"""FakeOut-style detector, tiny: pooled audio and video features and an MLP (512 → 128),
fine-tuned on labelled clips; scored per face track over up to 9 clips per video."""

from configs.detectors import tiny_detector_config


def get_config():
  return tiny_detector_config("fakeout", "finetune")
