"""The models' input conventions: what every model takes, as the input pipeline sends it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def unit_video(video: Array) -> Array:
  """Video batch [B, F, H, W, 3] in the model's float range [0, 1]: uint8 pixels (as the input
  pipeline sends them, 4× less to transfer) are divided by 255; float input passes unchanged."""
  if video.dtype == jnp.uint8:
    return video.astype(jnp.float32) / 255.0
  return video
