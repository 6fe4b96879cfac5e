"""Softmax attention kernels and the choice among them (``ModelConfig.attention_impl``).

  "xla":    ``jax.nn.dot_product_attention``'s XLA path; it materialises the [B, N, Tq, Tk]
            score matrix of every call.
  "cudnn":  cuDNN's fused flash attention on NVIDIA GPUs (bfloat16 / float16, head width ≤ 128
            and a multiple of 8).
  "pallas": the Pallas flash-attention kernel for TPUs (``jax.experimental.pallas.ops.tpu``):
            sequences padded to its 128-token blocks, the padded keys masked by segment ids,
            one kernel per device under ``jax.shard_map``.
  "auto":   cuDNN for bfloat16 / float16 on GPUs, Pallas on TPUs, XLA elsewhere (:func:`choose`).

A kernel that cannot serve a call (a dtype, a head width, a batch that does not split over the
devices) falls back to XLA for that call; the reason is logged once and kept in
:data:`FALLBACKS`.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import PartitionSpec

Array = jax.Array
IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas")
GPU_PLATFORMS = ("gpu", "cuda", "rocm")
FUSED_GPU_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128
PALLAS_BLOCK = 128  # the TPU kernel's token block (its default BlockSizes)
# Every fallback reason logged in this process (reported by the benchmark).
FALLBACKS: set = set()


def choose(requested: Optional[str], platform: str, dtype: Any) -> str:
  """The kernel for ``requested`` ("auto" or None: by ``platform`` and compute ``dtype``)."""
  if requested in (None, "auto"):
    if platform in GPU_PLATFORMS and jnp.dtype(dtype) in map(jnp.dtype, FUSED_GPU_DTYPES):
      return "cudnn"
    return "pallas" if platform == "tpu" else "xla"
  if requested not in IMPLEMENTATIONS:
    raise ValueError(f"attention_impl must be one of {IMPLEMENTATIONS}, got {requested!r}")
  return requested


def unsupported(implementation: str, q: Array, spec: Optional[PartitionSpec]) -> Optional[str]:
  """Why ``implementation`` cannot serve attention on q [B, Tq, N, H] split as ``spec`` over
  the mesh in context, or None."""
  head_dim = q.shape[-1]
  if implementation == "cudnn":
    if jnp.dtype(q.dtype) not in map(jnp.dtype, FUSED_GPU_DTYPES):
      return f"cuDNN attention takes bfloat16 or float16, not {jnp.dtype(q.dtype).name}"
    if head_dim > CUDNN_MAX_HEAD_DIM or head_dim % 8:
      return f"cuDNN attention takes head widths ≤ 128 and multiples of 8, not {head_dim}"
  if implementation == "pallas":
    if head_dim > PALLAS_BLOCK and head_dim % PALLAS_BLOCK:
      return f"the Pallas kernel takes head widths ≤ 128 or multiples of 128, not {head_dim}"
    mesh = jax.sharding.get_abstract_mesh()
    for dim, axes in zip(q.shape, spec or ()):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      shards = 1 if mesh.empty else math.prod(mesh.shape[a] for a in names)
      if dim % shards:
        return f"an extent of {dim} does not split over the {shards} devices of {names}"
  return None


def attend(q: Array, k: Array, v: Array, implementation: Optional[str],
           spec: Optional[PartitionSpec] = None, platform: Optional[str] = None) -> Array:
  """Softmax attention with scale H^-0.5: q [B, Tq, N, H], k/v [B, Tk, N, H] -> [B, Tq, N, H].

  ``implementation``: one of :data:`IMPLEMENTATIONS` (None: "auto", resolved for ``platform``,
  default JAX's default backend); ``spec``: how q, k and v are split over the mesh in context
  (the Pallas kernel runs per device)."""
  chosen = choose(implementation, platform or jax.default_backend(), q.dtype)
  reason = unsupported(chosen, q, spec)
  if reason is not None:
    message = f"attention {tuple(q.shape)} x {tuple(k.shape)}: {chosen} -> xla ({reason})"
    if message not in FALLBACKS:
      FALLBACKS.add(message)
      logging.info("%s", message)
    chosen = "xla"
  if chosen == "pallas":
    return _pallas(q, k, v, spec)
  return jax.nn.dot_product_attention(q, k, v, implementation=chosen)


def _pallas(q: Array, k: Array, v: Array, spec: Optional[PartitionSpec]) -> Array:
  """The TPU flash-attention kernel per device of the mesh in context (split as ``spec``)."""
  if jax.sharding.get_abstract_mesh().empty or spec is None:
    return _pallas_local(q, k, v)
  return jax.shard_map(_pallas_local, in_specs=(spec,) * 3, out_specs=spec, check_vma=False
                       )(q, k, v)


def _pad_tokens(x: Array, length: int) -> Array:
  """[B, T, N, H] -> [B, length, N, H], zeros after the T tokens."""
  return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))


def _pallas_local(q: Array, k: Array, v: Array) -> Array:
  """Pallas flash attention of one device's q [B, Tq, N, H], k/v [B, Tk, N, H]: both
  sequences padded to multiples of :data:`PALLAS_BLOCK`; padded keys carry segment id 0, every
  query 1, so no query attends to padding (padded queries are cut off)."""
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash
  batch, q_len, _, head_dim = q.shape
  kv_len = k.shape[1]
  round_up = lambda n: -(-n // PALLAS_BLOCK) * PALLAS_BLOCK
  q_pad, kv_pad = round_up(q_len), round_up(kv_len)
  heads_first = lambda x, n: jnp.swapaxes(_pad_tokens(x, n), 1, 2)  # [B, N, T, H]
  segments = tpu_flash.SegmentIds(
      q=jnp.ones((batch, q_pad), jnp.int32),
      kv=jnp.broadcast_to((jnp.arange(kv_pad) < kv_len).astype(jnp.int32), (batch, kv_pad)))
  b = PALLAS_BLOCK
  blocks = tpu_flash.BlockSizes(block_q=b, block_k_major=b, block_k=b, block_b=1,
                                block_q_major_dkv=b, block_k_major_dkv=b, block_k_dkv=b,
                                block_q_dkv=b, block_k_major_dq=b, block_k_dq=b, block_q_dq=b)
  out = tpu_flash.flash_attention(heads_first(q, q_pad), heads_first(k, kv_pad),
                                  heads_first(v, kv_pad), segment_ids=segments,
                                  sm_scale=head_dim ** -0.5, block_sizes=blocks)
  return jnp.swapaxes(out, 1, 2)[:, :q_len]
