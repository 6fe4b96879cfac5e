"""Building blocks shared by the HAVIC encoders and decoders.

Fixed sin-cos tables (spec §3), attention units, MLP, DropPath, pre-norm ViT blocks, and the
token bookkeeping (gather/scatter of kept tokens, segment tokens). Parameters carry logical
axis names; the mapping of names to mesh axes lives in the config (``sharding.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models import attention

Array = jax.Array

# Logical axis names used by parameters and activations (mapped to mesh axes by config rules).
BATCH = "batch"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
QKV = "qkv"
ACT_HEADS = "act_heads"

SEGMENT_TOKEN_INIT_STD = 0.02
MODALITY_INIT_STD = 0.02
SINCOS_TEMPERATURE = 10000.0  # the 10000 of angle = p / 10000^(2k/D) (spec §3)


# --------------------------------------------------------------------------------------------
# Fixed sin-cos tables (NumPy, float32 arithmetic as in the released code)
# --------------------------------------------------------------------------------------------
def sincos_1d(positions: np.ndarray, dim: int, dtype: Any = np.float32) -> np.ndarray:
  """Interleaved 1-D sin-cos table: angle = p / 10000^(2k/dim); dim 2k = sin, 2k+1 = cos.

  Args:
    positions: [M] positions (integers).
    dim: even table width.
    dtype: the arithmetic and result type (float32 for the model; float64 gives the exact
      table that stored copies are checked against).
  Returns:
    [M, dim] of ``dtype``.
  """
  if dim % 2:
    raise ValueError(f"sin-cos tables need an even width, got {dim}")
  pair = np.arange(dim) // 2
  exponent = (2 * pair).astype(dtype) / dtype(dim)
  denom = np.power(dtype(SINCOS_TEMPERATURE), exponent)
  angles = np.asarray(positions, dtype)[:, None] / denom[None, :]
  table = np.empty_like(angles)
  table[:, 0::2] = np.sin(angles[:, 0::2])
  table[:, 1::2] = np.cos(angles[:, 1::2])
  return table


def sincos_2d(mel_tokens: int, time_tokens: int, dim: int, dtype: Any = np.float32
              ) -> np.ndarray:
  """2-D audio table on the (mel, time) grid, flattened mel-major (index = f·time_tokens + t).

  The first dim/2 columns encode the time index, the last dim/2 the mel index.
  Returns: [mel_tokens·time_tokens, dim] of ``dtype``.
  """
  mel, time = np.meshgrid(np.arange(mel_tokens), np.arange(time_tokens), indexing="ij")
  return np.concatenate([sincos_1d(time.reshape(-1), dim // 2, dtype),
                         sincos_1d(mel.reshape(-1), dim // 2, dtype)], axis=1)


# --------------------------------------------------------------------------------------------
# Parameter helpers
# --------------------------------------------------------------------------------------------
@jax.custom_vjp
def _linear(x: Array, kernel: Array, bias: Optional[Array]) -> Array:
  """x [..., in] (compute dtype) · kernel [in, out] (+ bias [out]), both cast to x's dtype;
  the weight gradients come back in the parameters' dtype (:func:`_linear_bwd`)."""
  return _linear_fwd(x, kernel, bias)[0]


def _linear_fwd(x, kernel, bias):
  y = jax.lax.dot_general(x, kernel.astype(x.dtype), (((x.ndim - 1,), (0,)), ((), ())))
  if bias is not None:
    y = y + bias.astype(x.dtype)
  return y, (x, kernel, bias)


def _linear_bwd(residuals, g):
  """The input gradient in the compute dtype; the kernel and bias gradients accumulated and
  returned in their own dtype (float32), so that the sums over the batch, on each device and
  across devices (the data-parallel reduction XLA places on this output), run in float32."""
  x, kernel, bias = residuals
  batch = tuple(range(x.ndim - 1))
  dx = jax.lax.dot_general(g, kernel.astype(g.dtype), (((g.ndim - 1,), (1,)), ((), ())))
  dkernel = jax.lax.dot_general(x, g, ((batch, batch), ((), ())),
                                preferred_element_type=kernel.dtype)
  dbias = None if bias is None else jnp.sum(g, axis=batch, dtype=bias.dtype)
  return dx, dkernel, dbias


_linear.defvjp(_linear_fwd, _linear_bwd)


class Dense(nn.Module):
  """``nn.Dense`` (same parameters and forward) whose weight gradients leave their matmul in
  the parameters' float32 when it computes in another dtype: a bfloat16 step reduces its
  gradients in float32 (``train_step``'s ``grad_reduce_dtype`` can ask for bfloat16).

  x [..., in] -> [..., features]; kernel [in, features] and bias [features] carry the logical
  axis names ``axes`` = (in, out)."""

  features: int
  axes: tuple
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), jnp.float32)
    bias = (self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                            self.axes[1:]),
                       (self.features,), jnp.float32) if self.use_bias else None)
    x = x.astype(self.dtype)
    if kernel.dtype == x.dtype:  # one dtype: autodiff's own gradients are already in it
      return _linear_fwd(x, kernel, bias)[0]
    return _linear(x, kernel, bias)


def dense(features: int, axes: tuple, *, use_bias: bool = True, dtype: Any = jnp.float32,
          kernel_init: Callable = nn.initializers.xavier_uniform(), name: Optional[str] = None
          ) -> Dense:
  """A :class:`Dense` layer whose kernel/bias carry logical axis names ``axes`` = (in, out)."""
  return Dense(features, axes, use_bias=use_bias, dtype=dtype, kernel_init=kernel_init,
               name=name)


def layer_norm(name: str, eps: float, dtype: Any = jnp.float32) -> nn.LayerNorm:
  """LayerNorm over the last axis with epsilon ``eps`` (``ModelConfig.layer_norm_eps``)."""
  return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (EMBED,)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (EMBED,)))


def vector_param(module: nn.Module, name: str, shape: Sequence[int], init: Callable,
                 axes: tuple) -> Array:
  """A free parameter tensor (tokens, modality vectors) with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape))


# --------------------------------------------------------------------------------------------
# Token bookkeeping
# --------------------------------------------------------------------------------------------
def gather_tokens(x: Array, ids_keep: Array) -> Array:
  """[B, N, D], [B, K] int -> [B, K, D] (kept tokens, in the order of ``ids_keep``)."""
  return jnp.take_along_axis(x, ids_keep[..., None], axis=1)


def scatter_tokens(visible: Array, ids_keep: Array, fill: Array, num_tokens: int) -> Array:
  """Places visible tokens [B, K, D] at ``ids_keep`` (distinct per sample) in a
  length-``num_tokens`` sequence filled with ``fill`` [D] (a mask token). Returns
  [B, num_tokens, D]."""
  batch, _, dim = visible.shape
  full = jnp.broadcast_to(fill.astype(visible.dtype), (batch, num_tokens, dim))
  return jax.vmap(lambda f, i, v: f.at[i].set(v, unique_indices=True))(full, ids_keep, visible)


def insert_segment_tokens(segment_tokens: Array, patches: Array, num_segments: int) -> Array:
  """[B, T, D] segment tokens and [B, T·P, D] patches -> [B, T·(1+P), D] (one token in front
  of each segment)."""
  batch, length, dim = patches.shape
  patches = patches.reshape(batch, num_segments, length // num_segments, dim)
  x = jnp.concatenate([segment_tokens[:, :, None, :].astype(patches.dtype), patches], axis=2)
  return x.reshape(batch, -1, dim)


def split_segment_tokens(x: Array, num_segments: int) -> tuple[Array, Array]:
  """[B, T·(1+P), D] -> (segment tokens [B, T, D], patches [B, T·P, D])."""
  batch, length, dim = x.shape
  x = x.reshape(batch, num_segments, length // num_segments, dim)
  return x[:, :, 0], x[:, :, 1:].reshape(batch, -1, dim)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------
def multi_head_attention(q: Array, k: Array, v: Array, num_heads: int,
                         implementation: str = "auto") -> Array:
  """Softmax attention with scale head_dim^-0.5 by the kernel ``implementation``
  (``attention.IMPLEMENTATIONS``). q [B, Nq, C], k/v [B, Nk, C] -> [B, Nq, C]."""
  batch, nq, channels = q.shape
  head_dim = channels // num_heads
  names = (BATCH, None, ACT_HEADS, None)
  split = lambda t: nn.with_logical_constraint(
      t.reshape(batch, t.shape[1], num_heads, head_dim), names)
  out = attention.attend(split(q), split(k), split(v), implementation,
                         spec=nn.logical_to_mesh_axes(names))
  return out.reshape(batch, nq, channels)


class SelfAttention(nn.Module):
  """Multi-head self-attention with one fused ``qkv`` projection and an output ``proj``.

  ``qv_bias=True`` (encoders and reconstruction decoders, spec §4): ``qkv`` has no bias and
  learnable ``q_bias`` / ``v_bias`` are added (k gets none). ``qv_bias=False`` (cross-modal
  decoders): a standard biased ``qkv``. x [B, N, C] -> [B, N, C].
  """

  num_heads: int
  qv_bias: bool = True
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    qkv = dense(3 * width, (EMBED, QKV), use_bias=not self.qv_bias, dtype=self.dtype,
                name="qkv")(x)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    if self.qv_bias:
      q = q + vector_param(self, "q_bias", (width,), nn.initializers.zeros, (HEADS,)
                           ).astype(q.dtype)
      v = v + vector_param(self, "v_bias", (width,), nn.initializers.zeros, (HEADS,)
                           ).astype(v.dtype)
    out = multi_head_attention(q, k, v, self.num_heads, self.attention_impl)
    return dense(width, (HEADS, EMBED), dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
  """``fc2(GELU_exact(fc1(x)))`` with hidden width ``ratio``·width."""

  ratio: float = 4.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    h = dense(int(width * self.ratio), (EMBED, MLP), dtype=self.dtype, name="fc1")(x)
    h = nn.gelu(h, approximate=False)
    return dense(width, (MLP, EMBED), dtype=self.dtype, name="fc2")(h)


def drop_path(x: Array, rate: float, deterministic: bool, rng: Optional[Array]) -> Array:
  """Stochastic depth: drops the whole residual branch per sample with probability ``rate``."""
  if deterministic or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class TransformerBlock(nn.Module):
  """Pre-norm ViT block ``x + Attn(LN(x))``, ``x + MLP(LN(x))`` with optional DropPath.

  ``qv_bias`` selects the attention's bias layout (see :class:`SelfAttention`); both LayerNorms
  use epsilon ``layer_norm_eps``.
  """

  num_heads: int
  layer_norm_eps: float
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  qv_bias: bool = True
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    attn = SelfAttention(self.num_heads, self.qv_bias, self.dtype, self.attention_impl,
                         name="attn")
    rng = lambda: (None if deterministic or self.drop_path_rate == 0.0
                   else self.make_rng("dropout"))
    norm = lambda name: layer_norm(name, self.layer_norm_eps, self.dtype)
    x = x + drop_path(attn(norm("norm1")(x)), self.drop_path_rate, deterministic, rng())
    h = Mlp(self.mlp_ratio, self.dtype, name="mlp")(norm("norm2")(x))
    x = x + drop_path(h, self.drop_path_rate, deterministic, rng())
    return nn.with_logical_constraint(x, (BATCH, None, None))


class CrossAttentionUnit(nn.Module):
  """One direction of the audio-visual interaction module (spec §6).

  ``q = Wq·LN_q(query)``, ``k = Wk·LN_k(context)``, ``v = Wv·context`` (v not normalised),
  ``y = query + Wo·attn``, ``y = y + MLP(LN_2(y))`` (LayerNorm epsilon ``layer_norm_eps``).
  Returns y [B, Nq, C].
  """

  num_heads: int
  layer_norm_eps: float
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, query: Array, context: Array) -> Array:
    width = query.shape[-1]
    norm = lambda name: layer_norm(name, self.layer_norm_eps, self.dtype)
    q = dense(width, (EMBED, HEADS), dtype=self.dtype, name="q")(norm("norm_q")(query))
    k = dense(width, (EMBED, HEADS), dtype=self.dtype, name="k")(norm("norm_k")(context))
    v = dense(width, (EMBED, HEADS), dtype=self.dtype, name="v")(context)
    out = multi_head_attention(q, k, v, self.num_heads, self.attention_impl)
    y = query + dense(width, (HEADS, EMBED), dtype=self.dtype, name="out")(out)
    return y + Mlp(self.mlp_ratio, self.dtype, name="mlp")(norm("norm2")(y))


class HierarchicalAttention(nn.Module):
  """HiA unit of the reconstruction decoders (spec §7.2).

  ``e = Linear(enc_width -> width)(encoder tokens)``, ``q = Wq·LN_q(x)``, ``k = Wk·LN_k(e)``,
  ``v = Wv·LN_k(e)``; returns ``LN_out(LN_q(x) + attn)`` (no output projection; LayerNorm
  epsilon ``layer_norm_eps``). x [B, N, width], encoder tokens [B, K, enc_width] -> [B, N, width].
  """

  num_heads: int
  layer_norm_eps: float
  dtype: Any = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x: Array, encoder_tokens: Array) -> Array:
    width = x.shape[-1]
    e = dense(width, (EMBED, HEADS), dtype=self.dtype, name="encoder_proj")(encoder_tokens)
    norm = lambda name: layer_norm(name, self.layer_norm_eps, self.dtype)
    xq = norm("norm_q")(x)
    ek = norm("norm_k")(e)
    q = dense(width, (EMBED, HEADS), dtype=self.dtype, name="q")(xq)
    k = dense(width, (EMBED, HEADS), dtype=self.dtype, name="k")(ek)
    v = dense(width, (EMBED, HEADS), dtype=self.dtype, name="v")(ek)
    out = multi_head_attention(q, k, v, self.num_heads, self.attention_impl)
    return norm("out_norm")(xq + out)
