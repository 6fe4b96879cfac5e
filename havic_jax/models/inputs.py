"""The models' input conventions: what every model takes, as the input pipeline sends it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def unit_video(video: Array, dtype: Any) -> Array:
  """Video batch [B, F, H, W, 3] in the model's float range [0, 1], in ``dtype`` (the model's
  compute dtype, or float32 for loss targets): uint8 pixels (as the input pipeline sends them,
  4× less to transfer) are divided by 255; float input is only cast."""
  if video.dtype == jnp.uint8:
    return video.astype(dtype) / jnp.asarray(255, dtype)
  return video.astype(dtype)
