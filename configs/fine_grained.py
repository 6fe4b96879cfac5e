"""Fine-grained inconsistency detector: the spatially-local head, fine-tuned
(``stage=finetune``) with temporally-local pseudo-fakes.

  --config=configs/fine_grained.py:size=base
"""

from configs import common


def get_config(arg=None):
  args = common.detector_args(arg, ("finetune",))
  config = common.detector_config("fine_grained", args.stage, args.size)
  config.pseudo_fakes.enabled = True
  return config
