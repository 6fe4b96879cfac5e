"""Pretraining masks (spec §5), drawn by the input pipeline from each clip's generator, so
that they follow the clip's position in the global stream and not the host count.

Masks are given as kept token indices ``ids_keep`` [B, K], grouped segment by segment (the
encoders insert one segment token per group), in random order inside a group.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from havic_jax.models.config import ModelConfig


def kept_per_group(group_size: int, mask_ratio: float) -> int:
  """⌊group_size·(1 − mask_ratio)⌋ (196, 0.9 -> 19; 64, 0.8125 -> 12)."""
  return int(group_size * (1.0 - mask_ratio))


def pretraining_masks(rng: np.random.Generator, model_config: ModelConfig, video_mask_ratio: float,
                      audio_mask_ratio: float) -> Tuple[np.ndarray, np.ndarray]:
  """One sample's masks: (ids_keep_video [K_v], ids_keep_audio [K_a]) int32.

  Video: tube masking, one random spatial subset of each time slice's tokens kept in every
  slice (a segment spans one or more slices, so the indices stay grouped by segment). Audio:
  an independent random subset of each segment's tokens."""
  slice_tokens = model_config.video_grid ** 2
  keep_v = kept_per_group(slice_tokens, video_mask_ratio)
  spatial = rng.permutation(slice_tokens)[:keep_v]
  ids_video = spatial[None] + slice_tokens * np.arange(model_config.video_time_tokens)[:, None]
  segment_tokens = model_config.audio_segment_tokens
  keep_a = kept_per_group(segment_tokens, audio_mask_ratio)
  local = np.argsort(rng.random((model_config.num_segments, segment_tokens)), axis=1)[:, :keep_a]
  ids_audio = local + segment_tokens * np.arange(model_config.num_segments)[:, None]
  return ids_video.reshape(-1).astype(np.int32), ids_audio.reshape(-1).astype(np.int32)


def pretraining_mask_batch(rng: np.random.Generator, batch_size: int, model_config: ModelConfig,
                           video_mask_ratio: float, audio_mask_ratio: float
                           ) -> Tuple[np.ndarray, np.ndarray]:
  """:func:`pretraining_masks` of ``batch_size`` samples drawn in turn from ``rng``:
  (ids_keep_video [B, K_v], ids_keep_audio [B, K_a]) int32."""
  draws = [pretraining_masks(rng, model_config, video_mask_ratio, audio_mask_ratio)
           for _ in range(batch_size)]
  return np.stack([v for v, _ in draws]), np.stack([a for _, a in draws])
