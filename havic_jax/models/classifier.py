"""Fine-tuning heads: token reducers, layer pools and MLP classifiers (spec §9)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from havic_jax.models import layers

Array = jax.Array


class TokenReducer(nn.Module):
  """Adaptive token aggregation: scores = Linear(D->h) -> ReLU -> Linear(h->1), softmax over
  tokens, weighted sum. x [B, N, D] -> [B, D]."""

  hidden: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = nn.relu(layers.dense(self.hidden, (layers.EMBED, None), dtype=self.dtype,
                             name="hidden")(x))
    scores = layers.dense(1, (None, None), dtype=self.dtype, name="score")(h)[..., 0]
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(x.dtype)
    return jnp.einsum("bn,bnd->bd", weights, x)


class LayerPool(nn.Module):
  """Softmax-weighted mix of per-layer features [B, L, D] -> [B, D]; weights start equal."""

  @nn.compact
  def __call__(self, features: Array) -> Array:
    num_layers = features.shape[1]
    logits = self.param("weights", nn.initializers.constant(1.0 / num_layers), (num_layers,))
    return jnp.einsum("l,bld->bd", jax.nn.softmax(logits).astype(features.dtype), features)


class ClassifierMLP(nn.Module):
  """``Linear -> Dropout -> ReLU`` per hidden layer, then ``Linear(-> 1)``; xavier-uniform
  weights, zero biases. x [B, D_in] -> logits [B]."""

  hidden: Sequence[int]
  dropout: Sequence[float]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    for i, (features, rate) in enumerate(zip(self.hidden, self.dropout)):
      x = layers.dense(features, (None, layers.MLP), dtype=self.dtype, name=f"hidden_{i}")(x)
      x = nn.relu(nn.Dropout(rate, deterministic=deterministic)(x))
    return layers.dense(1, (None, None), dtype=self.dtype, name="out")(x)[..., 0]
