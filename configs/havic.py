"""HAVIC: audio-visual pretraining (``stage=pretrain``) and the deepfake classifier
(``stage=finetune``, start it with ``--config.init_from=PRETRAIN_WORKDIR_OR_EXPORT``), at the
paper's sizes (``size=base``: 243.1M reference tensors, batch 112 / 32) or the tiny model
(``size=tiny``: batch 8, 20 steps, seconds on a CPU).

  --config=configs/havic.py:stage=pretrain,size=base
"""

from configs import common


def get_config(arg=None):
  args = common.detector_args(arg, common.STAGES)
  return common.detector_config("havic", args.stage, args.size)
