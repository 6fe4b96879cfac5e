"""The same as ``configs/fakeout.py:size=tiny``."""

from configs import fakeout


def get_config():
  return fakeout.get_config("size=tiny")
