"""The tiny model section (tests): ``common.model_config("tiny")``."""

from configs import common


def tiny_model():
  return common.model_config("tiny")
