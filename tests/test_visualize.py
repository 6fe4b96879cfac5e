"""Reconstruction images: a perfect reconstruction reproduces the input row, the masked row is
grey exactly at the masked tubelets / patches, frames and mel bins sit where they belong."""

import matplotlib
import numpy as np
import pytest

from configs.tiny import tiny_model
from havic_jax.training import visualize
from havic_jax.models.masking import pretraining_masks
from havic_jax.models.config import model_config_from
from havic_jax.models.patches import patchify_audio, patchify_video

GREY = 128
GAP = visualize.GAP


def sample(compat="reference", seed=0):
  """(cfg, video [16, 32, 32, 3], audio [128, 64], ids_keep_video [32], ids_keep_audio [32])."""
  cfg = model_config_from(tiny_model(), compat)
  rng = np.random.default_rng(seed)
  video = rng.random((cfg.num_frames, cfg.image_size, cfg.image_size, 3), np.float32)
  audio = rng.normal(size=(cfg.audio_frames, cfg.mel_bins)).astype(np.float32)
  ids_v, ids_a = pretraining_masks(rng, cfg, 0.75, 0.75)
  return cfg, video, audio, ids_v, ids_a


def rows(panel, height):
  return [panel[r * (height + GAP):r * (height + GAP) + height] for r in range(3)]


def test_video_panel_rows():
  cfg, video, _, ids_v, _ = sample()
  recon = np.asarray(patchify_video(video[None], cfg))[0]
  panel = visualize.video_panel(video, ids_v, recon, cfg)
  size, p, g = cfg.image_size, cfg.patch_size, cfg.video_grid
  columns = cfg.video_time_tokens  # the first frame of each tubelet
  assert panel.dtype == np.uint8
  assert panel.shape == (3 * size + 2 * GAP, columns * size + (columns - 1) * GAP, 3)
  shown, masked, reconstructed = rows(panel, size)
  np.testing.assert_array_equal(reconstructed, shown)
  for t in range(columns):
    frame = np.round(video[t * cfg.tubelet_size] * 255).astype(np.uint8)
    np.testing.assert_array_equal(shown[:, t * (size + GAP):t * (size + GAP) + size], frame)

  kept = set(ids_v.tolist())
  assert 0 < len(kept) < cfg.video_tokens
  for token in range(cfg.video_tokens):
    t, h, w = np.unravel_index(token, (cfg.video_time_tokens, g, g))
    window = (slice(h * p, (h + 1) * p), slice(t * (size + GAP) + w * p,
                                               t * (size + GAP) + (w + 1) * p))
    if token in kept:
      np.testing.assert_array_equal(masked[window], shown[window])
    else:
      assert np.all(masked[window] == GREY), token


def test_video_panel_places_a_changed_reconstruction_token():
  cfg, video, _, ids_v, _ = sample()
  recon = np.asarray(patchify_video(video[None], cfg))[0].copy()
  token = 2 * cfg.video_grid ** 2 + 1 * cfg.video_grid + 3  # time slice 2, row 1, column 3
  recon[token] = 0.0
  size, p = cfg.image_size, cfg.patch_size
  reconstructed = rows(visualize.video_panel(video, ids_v, recon, cfg), size)[2]
  column = reconstructed[:, 2 * (size + GAP):2 * (size + GAP) + size]
  assert np.all(column[p:2 * p, 3 * p:4 * p] == 0)
  assert np.count_nonzero(np.all(column == 0, axis=-1)) == p * p


@pytest.mark.parametrize("compat", ["reference", "paper"])  # mel-major / time-major tokens
def test_spectrogram_panel_rows(compat):
  cfg, _, audio, _, ids_a = sample(compat)
  recon = np.asarray(patchify_audio(audio[None], cfg))[0]
  panel = visualize.spectrogram_panel(audio, ids_a, recon, cfg)
  mel, time, p = cfg.mel_bins, cfg.audio_frames, cfg.audio_patch_size
  assert panel.dtype == np.uint8 and panel.shape == (3 * mel + 2 * GAP, time, 3)
  shown, masked, reconstructed = rows(panel, mel)
  np.testing.assert_array_equal(reconstructed, shown)

  kept = set(ids_a.tolist())
  assert 0 < len(kept) < cfg.audio_tokens
  for token in range(cfg.audio_tokens):
    if cfg.audio_segments == "time":
      t, f = divmod(token, cfg.audio_mel_tokens)
    else:
      f, t = divmod(token, cfg.audio_time_tokens)
    window = (slice(mel - (f + 1) * p, mel - f * p), slice(t * p, (t + 1) * p))
    if token in kept:
      np.testing.assert_array_equal(masked[window], shown[window])
    else:
      assert np.all(masked[window] == GREY), token


def test_spectrogram_shows_time_left_to_right_and_mel_bin_zero_at_the_bottom():
  cfg, _, audio, _, ids_a = sample()
  audio = np.zeros_like(audio)
  audio[:, 0] = 1.0  # the lowest mel bin is the maximum
  audio[0, 1:] = -1.0  # the first frame is the minimum elsewhere
  recon = np.asarray(patchify_audio(audio[None], cfg))[0]
  shown = rows(visualize.spectrogram_panel(audio, ids_a, recon, cfg), cfg.mel_bins)[0]
  colour = lambda x: np.round(np.asarray(matplotlib.colormaps[visualize.COLORMAP](x)[:3])
                              * 255).astype(np.uint8)
  assert np.all(shown[-1] == colour(1.0))
  assert np.all(shown[:-1, 0] == colour(0.0))
  assert np.all(shown[:-1, 1:] == colour(0.5))


def test_reconstruction_images():
  cfg, video, audio, ids_v, ids_a = sample()
  images = visualize.reconstruction_images(
      video, audio, ids_v, ids_a, np.asarray(patchify_video(video[None], cfg))[0],
      np.asarray(patchify_audio(audio[None], cfg))[0], cfg)
  assert set(images) == {"video", "spectrogram"}
  assert images["video"].shape == (3 * 32 + 2 * GAP, 8 * 32 + 7 * GAP, 3)
  assert images["spectrogram"].shape == (3 * 64 + 2 * GAP, 128, 3)
