"""The tiny HAVIC model and run length, shared by the tiny configs (tests, demo)."""

from configs import common


def tiny_model():
  """16 frames of 32×32 (8×4×4 video tokens), 128×64 fbank (8×16 audio tokens), width 64,
  two encoder layers tapped after layers 1 and 2, two decoder blocks."""
  return common.model_config(
      image_size=32, patch_size=8, audio_frames=128, mel_bins=64, audio_patch_size=8,
      width=64, depth=2, num_heads=4, tap_layers=(1, 2),
      interaction_heads=4, cross_decoder_heads=4,
      decoder_width=32, decoder_depth=2, decoder_heads=2,
      reducer_hidden=16, classifier_hidden=(64, 32))


def tiny_config(stage: str):
  """``common.base_config(stage)`` with the tiny model, batch 8, 20 steps, logging every step,
  on the synthetic corpus the project generates itself, with the tiny optimiser settings."""
  config = common.base_config(stage)
  config.model = tiny_model()
  config.batch_size = 8
  config.num_steps = 20
  config.log_every = 1
  config.data.source = "synthetic_corpus"
  if stage == "finetune":  # the audio masks keep their share of the smaller fbank
    full = common.model_config()
    config.augment.freq_mask = config.augment.freq_mask * config.model.mel_bins // full.mel_bins
    config.augment.time_mask = (config.augment.time_mask * config.model.audio_frames
                                // full.audio_frames)
  tiny_optimizer(config)
  return config


def tiny_optimizer(config) -> None:
  """Learning rates for the tiny model. Fine-tuning: at 32×32 the tiny model learns the
  synthetic fakes' visual traces within a few hundred CPU steps only without classifier
  dropout, weight decay and the video augmentations; the base configs keep the spec's values."""
  if config.stage == "pretrain":
    config.optimizer.peak_learning_rate = 1e-3
    return
  config.optimizer.restart_every_steps = 400
  config.optimizer.pretrained_learning_rate = 3e-4
  config.optimizer.new_learning_rate = 3e-3
  config.model.classifier_dropout = (0.0, 0.0)
  config.optimizer.weight_decay = 0.0
  config.augment.video = False
