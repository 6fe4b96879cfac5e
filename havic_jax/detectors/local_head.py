"""Spatially-local audio-visual inconsistency head of the fine-grained detector.

For every position of the video token grid, the L2 distance between the audio features and
that position's video features over the whole clip forms a distance map; an audio-guided
softmax attention over the positions re-weights the map, and a linear classifier on the
weighted map gives the fake logit.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from havic_jax.models import layers

Array = jax.Array

ATTENTION_REDUCTION = 4  # query/key width = C / 4


class LocalInconsistencyHead(nn.Module):
  """Distance map re-weighted by audio-to-position attention, then a linear classifier.

  audio: [B, t, C] features, one per time step; video: [B, t, h, w, C] token grid.
  ``distance[b, i, j] = ‖audio[b] − video[b, :, i, j]‖₂`` over time × channels.
  ``q = Dense(C/4)(audio)`` [B, t, C/4], ``k = Dense(C/4)(video)`` [B, t, h, w, C/4];
  ``score[b, p] = mean_t <q[b, t], k[b, t, p]> / sqrt(C/4)``; ``attention`` = softmax of the
  scores over the h·w positions. The classifier ``Dense(1)`` reads the flattened
  ``distance · attention`` [B, h·w] (no residual). Dense layers compute in ``dtype``; the
  distance and softmax are float32.
  Returns {"logit": [B] (positive = fake), "distance": [B, h, w], "attention": [B, h, w]}.
  """

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio: Array, video: Array) -> Dict[str, Array]:
    batch, steps, height, width, channels = video.shape
    reduced = channels // ATTENTION_REDUCTION
    difference = (jnp.asarray(audio, jnp.float32)[:, :, None, None, :]
                  - jnp.asarray(video, jnp.float32))
    distance = jnp.sqrt(jnp.sum(difference ** 2, axis=(1, 4)))  # [B, h, w]

    query = layers.dense(reduced, (layers.EMBED, layers.MLP), dtype=self.dtype,
                         name="query")(audio)
    key = layers.dense(reduced, (layers.EMBED, layers.MLP), dtype=self.dtype,
                       name="key")(video)
    scores = jnp.einsum("btc,bthwc->bhw", query, key) / (steps * math.sqrt(reduced))
    attention = jax.nn.softmax(scores.reshape(batch, height * width).astype(jnp.float32),
                               axis=-1)
    weighted = distance.reshape(batch, height * width) * attention
    logit = layers.dense(1, (None, None), dtype=self.dtype, name="classifier")(weighted)
    return {"logit": logit[:, 0], "distance": distance,
            "attention": attention.reshape(batch, height, width)}
