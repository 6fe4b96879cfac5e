"""Input conventions of the models: how a batch's arrays enter them."""

import jax
import jax.numpy as jnp

Array = jax.Array


def unit_video(video: Array) -> Array:
  """Video batch in the model's float range [0, 1]: uint8 pixels (as the input pipeline
  sends them, 4× less to transfer) are divided by 255; float input passes unchanged."""
  if video.dtype == jnp.uint8:
    return video.astype(jnp.float32) / 255.0
  return video
