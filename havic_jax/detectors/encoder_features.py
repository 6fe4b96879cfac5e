"""Time-aligned features of the shared encoders, for the detectors built on them.

The video encoder's tokens are time-major; the audio encoder's follow the configured token
order (``models.patches.audio_token_order``). These helpers pool both onto the same time steps
of a clip (the audio fbank is interpolated over the clip, so its time axis spans the same 3.2 s
as the frames).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.encoders import AudioEncoder, VideoEncoder
from havic_jax.models.patches import audio_token_order
from havic_jax.models.inputs import unit_video

Array = jax.Array


def final_patches(taps: tuple, model_config: ModelConfig) -> Array:
  """The last tap's patch tokens (segment tokens left out): [B, N, D]."""
  return layers.split_segment_tokens(taps[-1], model_config.num_segments)[1]


def encoded_patches(model_config: ModelConfig, video: Array, audio: Array, deterministic: bool
                    ) -> tuple[Array, Array]:
  """Runs the unmasked encoders as children ``video_encoder`` / ``audio_encoder`` of the
  calling module (call inside its ``nn.compact`` method) -> final-layer patch tokens
  (video [B, N_v, D], audio [B, N_a, D])."""
  video_taps = VideoEncoder(model_config, name="video_encoder")(video, None, deterministic)
  audio_taps = AudioEncoder(model_config, name="audio_encoder")(audio, None, deterministic)
  return final_patches(video_taps, model_config), final_patches(audio_taps, model_config)


def video_grid_features(patches: Array, model_config: ModelConfig, steps: int) -> Array:
  """Video patch tokens [B, N_v, D] -> [B, steps, G, G, D]: the token grid, time pooled into
  ``steps`` equal spans."""
  b, _, d = patches.shape
  g, t = model_config.video_grid, model_config.video_time_tokens
  if t % steps:
    raise ValueError(f"{t} video time slices do not pool into {steps} steps")
  grid = patches.reshape(b, steps, t // steps, g, g, d)
  return jnp.mean(grid, axis=2)


def video_time_features(patches: Array, model_config: ModelConfig, steps: int) -> Array:
  """Video patch tokens [B, N_v, D] -> [B, steps, D] (spatial and within-step mean)."""
  return jnp.mean(video_grid_features(patches, model_config, steps), axis=(2, 3))


def audio_time_features(patches: Array, model_config: ModelConfig, steps: int) -> Array:
  """Audio patch tokens [B, N_a, D] in the configured order -> [B, steps, D]: mean over the mel
  axis and over each of ``steps`` equal spans of the time axis."""
  b, _, d = patches.shape
  f, t = model_config.audio_mel_tokens, model_config.audio_time_tokens
  if t % steps:
    raise ValueError(f"{t} audio time slices do not pool into {steps} steps")
  mel_major = patches[:, np.argsort(audio_token_order(model_config))]  # index = mel·T_a + time
  grid = mel_major.reshape(b, f, steps, t // steps, d)
  return jnp.mean(grid, axis=(1, 3))


def training_outputs(model: Any, params: Any, batch: Mapping[str, Array], key: Array) -> Any:
  """``model``'s outputs on a training batch (uint8 ``video`` scaled to [0, 1], ``audio``),
  with dropout drawn from ``key``."""
  return model.apply({"params": params},
                     unit_video(batch["video"], model.model_config.compute_dtype),
                     batch["audio"],
                     deterministic=False,
                     rngs={"dropout": key})


def pooled(patches: Array) -> Array:
  """[B, N, D] -> [B, D] token mean."""
  return jnp.mean(patches, axis=1)
