"""The same as ``configs/fine_grained.py:size=tiny``."""

from configs import fine_grained


def get_config():
  return fine_grained.get_config("size=tiny")
