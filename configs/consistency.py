"""Intra-/cross-modal consistency detector: unsupervised training (``stage=pretrain``) on real
clips, batches of identities × 2 clips from different videos.

  --config=configs/consistency.py:size=base
"""

from configs import common


def get_config(arg=None):
  args = common.detector_args(arg, ("pretrain",))
  config = common.detector_config("consistency", args.stage, args.size)
  config.data.clips_per_identity = 2
  return config
