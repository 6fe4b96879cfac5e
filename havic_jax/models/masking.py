"""Pretraining masks as pure functions of a PRNG key (spec §5).

Masks are given as kept token indices ``ids_keep`` [B, K], grouped segment by segment (the
encoders insert one segment token per group), in random order inside a group.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models.config import ModelConfig


def kept_per_group(group_size: int, mask_ratio: float) -> int:
  """⌊group_size·(1 − mask_ratio)⌋ (196, 0.9 -> 19; 64, 0.8125 -> 12)."""
  return int(group_size * (1.0 - mask_ratio))


def _random_subsets(key: jax.Array, shape: Tuple[int, ...], group_size: int, keep: int
                    ) -> jax.Array:
  """``keep`` distinct random indices in [0, group_size) per entry of ``shape``, in random
  order: [*shape, keep]."""
  noise = jax.random.uniform(key, shape + (group_size,))
  return jnp.argsort(noise, axis=-1)[..., :keep].astype(jnp.int32)


def tube_mask(key: jax.Array, batch_size: int, num_slices: int, tokens_per_slice: int,
              mask_ratio: float) -> jax.Array:
  """Tube masking: per sample one random spatial subset, kept in every time slice.

  Returns [B, num_slices·keep] int32: slice t holds ``subset + t·tokens_per_slice``.
  """
  keep = kept_per_group(tokens_per_slice, mask_ratio)
  spatial = _random_subsets(key, (batch_size,), tokens_per_slice, keep)  # [B, keep]
  offsets = jnp.arange(num_slices, dtype=jnp.int32)[:, None] * tokens_per_slice
  return (spatial[:, None, :] + offsets[None]).reshape(batch_size, -1)


def segment_mask(key: jax.Array, batch_size: int, num_segments: int, tokens_per_segment: int,
                 mask_ratio: float) -> jax.Array:
  """Independent random subset of each segment. Returns [B, num_segments·keep] int32."""
  keep = kept_per_group(tokens_per_segment, mask_ratio)
  local = _random_subsets(key, (batch_size, num_segments), tokens_per_segment, keep)
  offsets = jnp.arange(num_segments, dtype=jnp.int32)[:, None] * tokens_per_segment
  return (local + offsets[None]).reshape(batch_size, -1)


def pretraining_masks(key: jax.Array, batch_size: int, cfg: ModelConfig,
                      video_mask_ratio: float, audio_mask_ratio: float
                      ) -> Tuple[jax.Array, jax.Array]:
  """(ids_keep_video [B, K_v], ids_keep_audio [B, K_a]) for one batch.

  Video: tube masking over the time slices (one segment spans one or more slices, so the
  indices stay grouped by segment). Audio: per-segment masking.
  """
  video_key, audio_key = jax.random.split(key)
  ids_video = tube_mask(video_key, batch_size, cfg.video_time_tokens, cfg.video_grid ** 2,
                        video_mask_ratio)
  ids_audio = segment_mask(audio_key, batch_size, cfg.num_segments, cfg.audio_segment_tokens,
                           audio_mask_ratio)
  return ids_video, ids_audio


def host_pretraining_masks(rng: np.random.Generator, cfg: ModelConfig, video_mask_ratio: float,
                           audio_mask_ratio: float) -> Tuple[np.ndarray, np.ndarray]:
  """One sample's masks drawn on the host (input pipeline), same layout as
  :func:`pretraining_masks`: (ids_keep_video [K_v], ids_keep_audio [K_a]) int32."""
  slice_tokens = cfg.video_grid ** 2
  keep_v = kept_per_group(slice_tokens, video_mask_ratio)
  spatial = rng.permutation(slice_tokens)[:keep_v]
  ids_video = spatial[None] + slice_tokens * np.arange(cfg.video_time_tokens)[:, None]
  segment_tokens = cfg.audio_segment_tokens
  keep_a = kept_per_group(segment_tokens, audio_mask_ratio)
  local = np.argsort(rng.random((cfg.num_segments, segment_tokens)), axis=1)[:, :keep_a]
  ids_audio = local + segment_tokens * np.arange(cfg.num_segments)[:, None]
  return ids_video.reshape(-1).astype(np.int32), ids_audio.reshape(-1).astype(np.int32)
