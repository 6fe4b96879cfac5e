"""The attention kernels: the choice per platform and dtype, the logged fallback, and the TPU
flash kernel (run in Pallas' TPU interpret mode on this CPU) against XLA's attention."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from havic_jax.models import attention


@pytest.mark.parametrize("platform, dtype, expected", [
    ("gpu", jnp.bfloat16, "cudnn"), ("cuda", jnp.float16, "cudnn"),
    ("gpu", jnp.float32, "xla"),  # cuDNN's flash attention has no float32 kernel
    ("tpu", jnp.float32, "pallas"), ("tpu", jnp.bfloat16, "pallas"),
    ("cpu", jnp.bfloat16, "xla"), ("cpu", jnp.float32, "xla"),
])
def test_auto_picks_the_kernel_of_the_platform_and_dtype(platform, dtype, expected):
  assert attention.choose("auto", platform, dtype) == expected
  assert attention.choose(None, platform, dtype) == expected  # config.json files of old runs
  assert attention.choose("xla", platform, dtype) == "xla"  # an explicit choice stays


def test_an_unknown_kernel_is_named():
  with pytest.raises(ValueError, match="one of .*flash"):
    attention.choose("flash", "gpu", jnp.bfloat16)


def qkv(q_len, kv_len, heads=2, head_dim=64, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return [jax.random.normal(key, (2, n, heads, head_dim), dtype)
          for key, n in zip(keys, (q_len, kv_len, kv_len))]


def test_a_kernel_that_cannot_serve_a_call_falls_back_with_a_logged_reason(caplog):
  q, k, v = qkv(10, 12)  # float32: cuDNN's kernel takes bfloat16 / float16 only
  with caplog.at_level(logging.INFO, logger="absl"):
    out = attention.attend(q, k, v, "cudnn")
  np.testing.assert_array_equal(out, jax.nn.dot_product_attention(q, k, v,
                                                                  implementation="xla"))
  reason = "cudnn -> xla (cuDNN attention takes bfloat16 or float16, not float32)"
  assert reason in caplog.text
  assert any(reason in message for message in attention.FALLBACKS)


def reference(q, k, v):
  """Softmax attention in float64 NumPy, [B, T, N, H] layout, scale H^-0.5."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  scores = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum("bnqk,bknh->bqnh", weights, v)


@pytest.mark.parametrize("q_len, kv_len, head_dim", [(50, 70, 64), (130, 8, 96)])
def test_the_tpu_flash_kernel_matches_softmax_attention_with_padded_blocks(q_len, kv_len,
                                                                            head_dim):
  """Lengths that are not multiples of the kernel's 128-token blocks (padded, the padded keys
  masked) and the head widths of the base model (64, and 96 in the interaction module);
  forward and gradients."""
  from jax.experimental.pallas import tpu as pltpu
  q, k, v = qkv(q_len, kv_len, head_dim=head_dim)
  loss = lambda impl: lambda q, k, v: jnp.sum(jnp.sin(attention.attend(q, k, v, impl)))
  with pltpu.force_tpu_interpret_mode():
    out = attention.attend(q, k, v, "pallas")
    grads = jax.grad(loss("pallas"), argnums=(0, 1, 2))(q, k, v)
  assert out.shape == q.shape
  np.testing.assert_allclose(out, reference(q, k, v), atol=2e-5)
  for got, want in zip(grads, jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, want, atol=5e-5)
