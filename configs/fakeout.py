"""FakeOut-style detector: pooled audio and video features and an MLP (512 → 128), fine-tuned
(``stage=finetune``) on labelled clips; scored per face track over up to 9 clips per video.

  --config=configs/fakeout.py:size=base
"""

from configs import common


def get_config(arg=None):
  args = common.detector_args(arg, ("finetune",))
  return common.detector_config("fakeout", args.stage, args.size)
