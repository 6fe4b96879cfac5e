"""Train state, its sharded creation, and the jitted pure train step.

The state is created from ``jax.eval_shape`` of the init function, so its shardings come from
the parameters' logical axis names and it never exists unsharded. The step is one
``jax.jit`` with explicit in/out shardings and a donated state. Call everything inside
``jax.set_mesh(mesh)`` and ``nn.logical_axis_rules(rules)`` (``training.builder.Training.scope``). The loss is the
detector's (``havic_jax.detectors.loss_fn``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from havic_jax import sharding
from havic_jax.models.config import ModelConfig
from havic_jax.models.havic_models import example_inputs

Array = jax.Array
Metrics = Dict[str, Array]
LossFn = Callable[[Any, Mapping[str, Array], Array], Tuple[Array, Metrics]]


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. ``rng`` is the run's base key; step ``s`` uses
  ``fold_in(rng, s)``, so a resumed run draws the same dropout."""

  step: Array
  params: Any
  opt_state: Any
  rng: Array


def init_train_state(model: nn.Module, model_config: ModelConfig, kept_tokens: bool,
                     optimizer: optax.GradientTransformation, rng: Array) -> TrainState:
  """Fresh state (parameters possibly boxed with logical axis names) of ``model``, which takes
  kept token indices where ``kept_tokens`` (``models.havic_models.example_inputs``).

  Parameters are drawn with XLA's RngBitGenerator (an ``rbg`` key seeded from ``rng``): one op
  per tensor instead of an unrolled threefry, which compiles several times faster. The step's
  masks and dropout keep the threefry ``rng``, identical on every mesh.
  """
  init_seed, state_rng = jax.random.split(rng)
  init_rng = jax.random.key(jax.random.bits(init_seed, dtype=jnp.uint32), impl="rbg")
  params = model.init(init_rng, *example_inputs(model_config, kept_tokens))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=state_rng)


def sharded_init(model: nn.Module, model_config: ModelConfig, kept_tokens: bool,
                 optimizer: optax.GradientTransformation, rng: Any, mesh: Mesh,
                 rules: sharding.Rules) -> Tuple[Callable[[Array], TrainState], Any]:
  """(jitted ``key -> state`` writing the unboxed state in its shardings, those shardings).
  ``rng`` may be abstract (a ``jax.ShapeDtypeStruct``): only its shape and dtype are read."""
  init = lambda r: init_train_state(model, model_config, kept_tokens, optimizer, r)
  shardings = sharding.logical_shardings(jax.eval_shape(init, rng), mesh, rules)
  return jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings), shardings


def split_microbatches(batch: Mapping[str, Array], count: int, batch_axes: Sequence[str]
                       ) -> Dict[str, Array]:
  """[B, ...] arrays -> [count, B/count, ...]; microbatch i holds samples i, i+count, ...

  The strided split keeps every microbatch spread over all devices of the mesh axes
  ``batch_axes`` (a
  contiguous split would put each microbatch on a few of them)."""
  def split(x):
    if x.shape[0] % count:
      raise ValueError(f"a batch of {x.shape[0]} does not split into {count} microbatches; "
                       f"make batch_size a multiple of grad_accumulation_steps")
    x = x.reshape((x.shape[0] // count, count) + x.shape[1:])
    x = jnp.moveaxis(x, 1, 0)
    return jax.lax.with_sharding_constraint(
        x, PartitionSpec(None, tuple(batch_axes), *([None] * (x.ndim - 2))))
  return {k: split(v) for k, v in batch.items()}


def reduced_in(params: Any, dtype: str) -> Any:
  """``params`` with floating leaves cast to ``dtype`` (the gradient reduction's dtype:
  "float32" leaves float32 parameters as they are)."""
  return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
                      else p, params)


def accumulated_gradients(loss_fn: LossFn, params: Any, batch: Mapping[str, Array], key: Array,
                          microbatches: int, batch_axes: Sequence[str],
                          grad_reduce_dtype: str = "float32") -> Tuple[Any, Metrics]:
  """Gradients and metrics averaged over ``microbatches`` slices of ``batch``, run one after
  the other (a ``lax.scan``: activation memory of one microbatch). Microbatch i uses
  ``fold_in(key, i)``. Losses that are batch means (reconstruction, cross-modal, the
  fine-tuning BCEs) give the full batch's gradients; the contrastive loss sees the negatives
  of its microbatch only. ``microbatches=1`` is the plain full-batch gradient.

  ``grad_reduce_dtype``: the dtype the gradients are summed over the batch and the devices in.
  "float32": the layers (``layers.Dense``) return float32 weight gradients whatever the
  compute dtype; "bfloat16": the loss is differentiated at the parameters cast to bfloat16,
  so the sums (and the cross-device reduction, half the bytes) run in bfloat16. Either way the
  gradients returned have the parameters' dtype."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_reduce_dtype != "float32":
    inner = grad_fn
    grad_fn = lambda p, *args: inner(reduced_in(p, grad_reduce_dtype), *args)
  if microbatches == 1:
    (_, metrics), grads = grad_fn(params, batch, key)
    return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), metrics

  def one(carry, inputs):
    index, micro = inputs
    (_, metrics), grads = grad_fn(params, micro, jax.random.fold_in(key, index))
    return jax.tree.map(lambda c, g: c + g.astype(c.dtype), carry, grads), metrics

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  grads, metrics = jax.lax.scan(
      one, zeros, (jnp.arange(microbatches), split_microbatches(batch, microbatches, batch_axes)))
  return (jax.tree.map(lambda g, p: (g / microbatches).astype(p.dtype), grads, params),
          jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics))


def train_step(state: TrainState, batch: Mapping[str, Array], *, loss_fn: LossFn,
               optimizer: optax.GradientTransformation,
               schedules: Mapping[str, Callable[[Array], Array]], batch_axes: Sequence[str],
               microbatches: int = 1, grad_reduce_dtype: str = "float32"
               ) -> Tuple[TrainState, Metrics]:
  """One optimisation step: loss and gradients on the global batch (accumulated over
  ``microbatches`` slices, reduced in ``grad_reduce_dtype``), AdamW update."""
  key = jax.random.fold_in(state.rng, state.step)
  grads, metrics = accumulated_gradients(loss_fn, state.params, batch, key, microbatches,
                                         batch_axes, grad_reduce_dtype)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                 **{name: s(state.step) for name, s in schedules.items()})
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                   schedules: Mapping[str, Callable[[Array], Array]], state_shardings: Any,
                   mesh: Mesh, batch_axes: Sequence[str], microbatches: int = 1,
                   grad_reduce_dtype: str = "float32"
                   ) -> Callable[[TrainState, Mapping[str, Array]], Tuple[TrainState, Metrics]]:
  """The jitted step: state in its shardings (donated), batch split over the mesh axes
  ``batch_axes``, metrics replicated; gradients accumulated over ``microbatches`` slices of
  the batch and reduced in ``grad_reduce_dtype``."""
  step = functools.partial(train_step, loss_fn=loss_fn, optimizer=optimizer,
                           schedules=schedules, batch_axes=batch_axes, microbatches=microbatches,
                           grad_reduce_dtype=grad_reduce_dtype)
  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh, batch_axes)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)),
                 donate_argnums=(0,))
