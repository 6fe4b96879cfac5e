"""The same as ``configs/voice_face.py:stage=finetune,size=tiny``."""

from configs import voice_face


def get_config():
  return voice_face.get_config("stage=finetune,size=tiny")
