"""The same as ``configs/havic.py:stage=pretrain,size=base``."""

from configs import havic


def get_config():
  return havic.get_config("stage=pretrain,size=base")
