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
  on the synthetic corpus the project generates itself."""
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
  return config
