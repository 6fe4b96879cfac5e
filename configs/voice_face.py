"""Voice–face matching (VFD): ``stage=pretrain`` learns identity classifiers and the voice–face
InfoNCE on real clips (batches of identities × 2 clips from different videos); ``stage=finetune``
trains the Real-Fake Contrastive loss on labelled clips. Start fine-tuning from a pretraining run
with ``--config.init_from=PRETRAIN_WORKDIR`` (its encoders and heads: ``havic_jax.training.loop``
loads the modules both models have).

  --config=configs/voice_face.py:stage=pretrain,size=base
"""

from configs import common


def get_config(arg=None):
  args = common.detector_args(arg, common.STAGES)
  config = common.detector_config("voice_face", args.stage, args.size)
  if args.stage == "pretrain":
    config.data.clips_per_identity = 2
  return config
