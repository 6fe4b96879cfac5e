"""The same as ``configs/consistency.py:size=tiny``."""

from configs import consistency


def get_config():
  return consistency.get_config("size=tiny")
