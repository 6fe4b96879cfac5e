"""The same as ``configs/havic.py:stage=pretrain,size=tiny``."""

from configs import havic


def get_config():
  return havic.get_config("stage=pretrain,size=tiny")
