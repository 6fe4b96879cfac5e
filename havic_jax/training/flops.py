"""Model FLOPs of a compiled step and the peak FLOP/s of a chip: the two halves of MFU.

FLOPs are counted from the program (every ``dot_general`` and convolution of the step's
jaxpr: 2 FLOPs per multiply-add, scans multiplied by their length; the model's matmul FLOPs,
independent of the compiler), on the step traced with XLA attention so the fused kernels'
matmuls are seen. A chip's peak is its vendor figure (``PEAK_BF16_FLOPS``), or, for chips not
in the table (CPUs included), the FLOP/s of a large matmul measured on it
(:func:`measured_matmul_flops`).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from havic_jax.training import builder

# Peak dense bf16 FLOP/s per chip (vendor figures, no sparsity), by a substring of device_kind.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> Optional[float]:
  """The peak dense bf16 FLOP/s of a chip, or None when it is not in PEAK_BF16_FLOPS."""
  for name, peak in PEAK_BF16_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def _sub_jaxprs(eqn: Any) -> Iterator[tuple]:
  """(jaxpr, multiplicity) of the sub-programs of an equation (scan bodies run ``length``
  times; other higher-order primitives once)."""
  times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr, times
      elif isinstance(item, jax_core.Jaxpr):
        yield item, times


def matmul_flops(jaxpr: Any) -> float:
  """FLOPs of every dot_general and convolution in ``jaxpr`` (and its sub-programs):
  2 × multiply-adds. ``cond`` branches are all counted (an upper bound)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      contracted = math.prod(lhs[d] for d in lhs_contract)
      total += 2.0 * contracted * math.prod(eqn.outvars[0].aval.shape)
    elif name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      spec = eqn.params["dimension_numbers"]
      in_features = kernel[spec.rhs_spec[1]]
      window = math.prod(kernel[d] for d in spec.rhs_spec[2:])
      total += 2.0 * math.prod(out) * in_features * window / eqn.params["feature_group_count"]
    for sub, times in _sub_jaxprs(eqn):
      total += times * matmul_flops(sub)
  return total


def with_xla_attention(training: builder.Training) -> builder.Training:
  """``training`` built again with XLA attention (itself where it has it). The fused kernels
  (cuDNN, Pallas) keep their matmuls inside one call, out of the program's equations; the
  same step with XLA attention shows them, so model FLOPs are counted on it."""
  if training.model_config.attention_impl == "xla":
    return training
  config = training.config.copy_and_resolve_references()
  config.model.attention_impl = "xla"
  return builder.build(config, training.mesh)


def train_step_flops(training: builder.Training, state: Any, batch: Any) -> float:
  """Model FLOPs of one ``training.step`` on ``state`` and the global ``batch`` (arrays or
  abstract arrays): :func:`matmul_flops` of the step traced with XLA attention."""
  counted = with_xla_attention(training)
  with counted.scope():
    return matmul_flops(counted.step.trace(
        *builder.abstract_like((state, dict(batch)))).jaxpr.jaxpr)


# The measured peak's matmul: [n, n] × [n, n] in the compute dtype, timed over repeats.
GEMM_SIZE = 2048
GEMM_REPEATS = 5


@functools.lru_cache(maxsize=None)
def measured_matmul_flops(device: Any, dtype: str = "float32") -> float:
  """FLOP/s of the fastest of ``GEMM_REPEATS`` [GEMM_SIZE]² matmuls on ``device`` (cached)."""
  x = jax.device_put(jnp.ones((GEMM_SIZE, GEMM_SIZE), dtype), device)
  matmul = jax.jit(lambda a: a @ a)
  matmul(x).block_until_ready()
  best = math.inf
  for _ in range(GEMM_REPEATS):
    started = time.perf_counter()
    matmul(x).block_until_ready()
    best = min(best, time.perf_counter() - started)
  return 2.0 * GEMM_SIZE ** 3 / best


def device_peak(device: Any, dtype: str) -> Tuple[float, str]:
  """(peak FLOP/s of ``device``, where it comes from): the vendor figure where the table has
  the chip, else a matmul in ``dtype`` measured on it."""
  peak = peak_flops(device.device_kind)
  if peak is not None:
    return peak, f"{device.device_kind} bf16 peak"
  return measured_matmul_flops(device, dtype), f"measured {dtype} matmul on {device.device_kind}"
