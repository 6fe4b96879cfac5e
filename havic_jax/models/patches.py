"""Pixel / spectrogram patches and the token orders of both streams (spec §2).

Video tokens are time-major (index = t·G² + h·G + w) with patch values laid out
``(c, pt, ph, pw)``. Audio tokens are mel-major (index = f·T_a + t) in the reference layout
(``audio_segments="frequency_bands"``) or time-major (index = t·F_a + f) for
``audio_segments="time"``; audio patch values are mel-row major inside a patch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models.config import ModelConfig


def patchify_video(video: jax.Array, model_config: ModelConfig) -> jax.Array:
  """[B, F, H, W, 3] frames -> [B, N_v, 3·pt·p·p] patches, values ordered (c, pt, ph, pw)."""
  b = video.shape[0]
  pt, p, g = model_config.tubelet_size, model_config.patch_size, model_config.video_grid
  x = video.reshape(b, model_config.video_time_tokens, pt, g, p, g, p, 3)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # [B, t, h, w, c, pt, ph, pw]
  return x.reshape(b, model_config.video_tokens, model_config.video_patch_dim)


def audio_token_order(model_config: ModelConfig) -> np.ndarray:
  """Permutation from mel-major grid indices to the configured token order. [N_a] int."""
  mel_major = np.arange(model_config.audio_tokens).reshape(model_config.audio_mel_tokens,
                                                           model_config.audio_time_tokens)
  if model_config.audio_segments == "time":
    return mel_major.T.reshape(-1)
  return mel_major.reshape(-1)


def patchify_audio(audio: jax.Array, model_config: ModelConfig) -> jax.Array:
  """[B, time, mel] normalised fbank -> [B, N_a, p·p] patches in the configured token order;
  values inside a patch are mel-row major (row = mel, column = time)."""
  b = audio.shape[0]
  p = model_config.audio_patch_size
  x = jnp.swapaxes(audio, 1, 2)  # [B, mel, time]
  x = x.reshape(b, model_config.audio_mel_tokens, p, model_config.audio_time_tokens, p)
  x = x.transpose(0, 1, 3, 2, 4).reshape(b, model_config.audio_tokens, p * p)
  order = audio_token_order(model_config)
  if model_config.audio_segments == "time":
    x = x[:, order]
  return x
