"""The same as ``configs/havic.py:stage=finetune,size=base``."""

from configs import havic


def get_config():
  return havic.get_config("stage=finetune,size=base")
