"""What a training run is made of, built once from a config and a mesh: the model, the loss of
the config's detector and stage, the optimiser, the state's shardings and the jitted step.

The training loop (``loop.run``), the benchmark (``bench``), the ahead-of-time compiler
(``aot``) and the tests all take these from :func:`build`. Building allocates and runs nothing
on the mesh's devices, so the mesh may be made of devices of a TPU topology description that
only compiles (``jax.experimental.topologies``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from havic_jax import detectors, sharding
from havic_jax.checkpoints import loading
from havic_jax.data import input_pipeline, records
from havic_jax.data.random_batches import synthetic_batches
from havic_jax.models import attention
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.training import run_length
from havic_jax.training.optimizer import Schedule, make_optimizer
from havic_jax.training.train_step import LossFn, TrainState, jit_train_step, sharded_init

# The shape and dtype of a ``jax.random.PRNGKey`` (the run's base key in ``TrainState.rng``).
KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)


@dataclasses.dataclass(frozen=True)
class Training:
  """The pieces of one training run on ``mesh``.

  config: the run's config, complete (``detector.num_identities``, the run length in steps and
  the ``schedule`` section filled in: :func:`build`);
  model_config: the model's sizes (``ModelConfig``, attention resolved for the mesh);
  kept_token_inputs: the model takes kept token indices (``detectors.kept_token_inputs``);
  init: jitted ``key -> TrainState``, the fresh state written directly in ``shardings``; step: the jitted
  ``(state, global batch) -> (state, metrics)`` (state donated). Trace, lower or call ``init``
  and ``step`` inside :meth:`scope`."""

  config: Any
  model_config: ModelConfig
  model: nn.Module
  kept_token_inputs: bool
  loss_fn: LossFn
  optimizer: optax.GradientTransformation
  schedules: Dict[str, Schedule]
  mesh: Mesh
  rules: sharding.Rules
  init: Callable[[jax.Array], TrainState]
  shardings: Any
  step: Callable

  @contextlib.contextmanager
  def scope(self) -> Iterator[None]:
    """The mesh and logical-axis rules the model's sharding annotations resolve against."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  @property
  def batch_sharding(self) -> NamedSharding:
    """The global batch's sharding: leading axis over ``config.mesh.batch_axes``."""
    return sharding.batch_sharding(self.mesh, self.config.mesh.batch_axes)

  def global_batch(self, local_batch: Mapping[str, np.ndarray]) -> Dict[str, jax.Array]:
    """This process's slice of a batch (NumPy) -> the global batch in :attr:`batch_sharding`."""
    return sharding.global_batch(local_batch, self.mesh, self.config.mesh.batch_axes)

  def initial_state(self) -> TrainState:
    """A new run's state: initialised from ``config.seed``, then every parameter that the
    checkpoints of ``config.init_from`` hold (comma-separated sources, each giving other
    modules: ``loading.load_modules``) put in its place (:func:`with_params`). Call inside
    :meth:`scope`."""
    state = self.init(jax.random.PRNGKey(self.config.seed))
    if not self.config.init_from:
      return state
    modules = loading.load_modules(self.config.init_from.split(","), self.model_config)
    state = with_params(state, self.shardings, modules)
    logging.info("initialised %s from %s", ", ".join(n for n in modules if n in state.params),
                 self.config.init_from)
    return state

  def abstract_state(self) -> TrainState:
    """The state as ``jax.ShapeDtypeStruct`` leaves carrying their shardings (computes
    nothing): a restore target, or the state argument of an ahead-of-time compile."""
    with self.scope():
      return jax.eval_shape(self.init, KEY)

  @property
  def mask_ratios(self) -> Optional[Tuple[float, float]]:
    """(video, audio) mask ratios of the host masks pretraining batches carry, else None."""
    if self.config.stage != "pretrain":
      return None
    return self.config.pretrain.video_mask_ratio, self.config.pretrain.audio_mask_ratio

  @property
  def learns_identities(self) -> bool:
    """Whether batches carry ``identity`` (pretraining of detectors that learn identities)."""
    return detectors.info(self.config).identities and self.config.stage == "pretrain"

  def batch_spec(self, global_batch: int) -> Dict[str, jax.ShapeDtypeStruct]:
    """The global batch the input pipeline sends for this config, as abstract arrays split
    over the batch axes: video uint8 [B, F, S, S, 3], audio float32 [B, T, M], the stage's
    masks or labels, and ``identity`` int32 [B] for detectors that learn identities."""
    ratios = self.mask_ratios or (0.0, 0.0)
    spec = input_pipeline.example_spec(self.model_config, self.config.stage, *ratios)
    if self.learns_identities:
      spec["identity"] = ((), np.int32)
    return {key: jax.ShapeDtypeStruct((global_batch,) + shape, dtype,
                                      sharding=self.batch_sharding)
            for key, (shape, dtype) in spec.items()}

  def random_batches(self, global_batch: int, fixed: bool = False, start_step: int = 0
                     ) -> Iterator[Dict[str, np.ndarray]]:
    """This process's random batches in the layout of :meth:`batch_spec` (the pipeline's:
    uint8 video, host-drawn masks, labels; ``random_batches.synthetic_batches``)."""
    return synthetic_batches(self.model_config, self.config.stage, global_batch, self.config.seed,
                             fixed=fixed, start_step=start_step, masks=self.mask_ratios,
                             identities=self.learns_identities)


def with_identity_count(config: Any, data: Optional[records.PreparedData]) -> Any:
  """A copy of ``config`` whose ``detector.num_identities`` (0: not set) is, for detectors that
  learn identities (``DetectorInfo.identities``), the count of identities of the real clips of
  the training split of ``data``, or the batch size for random batches (``data`` None: ids
  below the batch size)."""
  config = config.copy_and_resolve_references()
  if not detectors.info(config).identities or config.detector.num_identities:
    return config
  if data is None:
    config.detector.num_identities = config.batch_size
  else:
    indices = data.real_indices(data.split_indices(config.data.split or None))
    config.detector.num_identities = len(data.identity_vocabulary(indices))
  return config


def with_params(state: TrainState, shardings: Any, params: Mapping[str, Any]) -> TrainState:
  """``state`` with every parameter that ``params`` holds (same module and path) replaced by
  ``params``'s, placed in its sharding; shapes must match. Parameters ``params`` lacks keep
  their initialisation and are logged (a MARLIN or AudioMAE state_dict covers part of a
  module; a pretraining export has no classifier)."""
  ours = traverse_util.flatten_dict(state.params)
  given = traverse_util.flatten_dict(dict(params))
  shared = [path for path in given if path in ours]
  if not shared:
    raise ValueError(f"init_from: the checkpoint has modules {sorted(params)}, none of this "
                     f"model's {sorted(state.params)}; pass a pretraining workdir, an export or "
                     f"a released state_dict")
  wrong = [f"{'/'.join(path)}: {np.shape(given[path])}, the model's {ours[path].shape}"
           for path in shared if np.shape(given[path]) != ours[path].shape]
  if wrong:
    raise ValueError(f"init_from: shapes differ from this config's model ({wrong[:4]}); use "
                     f"the model sizes the checkpoint was trained with")
  flat_shardings = traverse_util.flatten_dict(shardings.params)
  for path in shared:
    ours[path] = jax.device_put(given[path], flat_shardings[path])
  left = sorted({path[0] for path in ours if path not in given})
  if left:
    count = sum(path not in given for path in ours)
    logging.warning("init_from: %d parameter tensors keep their initialisation (in modules %s)",
                    count, ", ".join(left))
  return state.replace(params=traverse_util.unflatten_dict(ours))


def real_clips_only(config: Any) -> bool:
  """Whether the run trains on real clips only (``data.real_only``, or pretraining of a
  detector that learns from real clips only)."""
  return config.data.real_only or (detectors.info(config).real_only
                                   and config.stage == "pretrain")


def with_run_length(config: Any, data: Optional[records.PreparedData]) -> Any:
  """``run_length.resolve`` of ``config`` for an epoch of the clips it trains on in ``data``;
  random batches (``data`` None: ``data.source="random"``, the benchmark, the ahead-of-time
  compiler) have no epochs, and count one batch as one."""
  clips = (config.batch_size if data is None else
           run_length.training_clips(data, config, real_clips_only(config)))
  return run_length.resolve(config, clips)


def build(config: Any, mesh: Mesh, data: Optional[records.PreparedData] = None) -> Training:
  """The model, loss, optimiser, state shardings and jitted step of ``config`` on ``mesh``.

  ``data``: the prepared training data (None: random batches), which gives detectors that
  learn identities their identity count (:func:`with_identity_count`) and epochs their clip
  count (:func:`with_run_length`); ``Training.config`` is ``config`` completed so."""
  config = with_run_length(with_identity_count(config, data), data)
  model_config = model_config_from(config.model, config.compat)
  # "auto" attention resolves for the mesh's devices (a TPU topology compiled on a CPU host
  # gets the TPU kernel).
  platform = mesh.devices.flat[0].platform
  model_config = dataclasses.replace(model_config, attention_impl=attention.choose(
      model_config.attention_impl, platform, model_config.compute_dtype))
  logging.info("attention: %s (attention_impl=%s, %s, %s)", model_config.attention_impl,
               config.model.attention_impl, platform, model_config.dtype)
  model = detectors.build_model(model_config, config)
  kept_tokens = detectors.kept_token_inputs(config)
  optimizer, schedules = make_optimizer(config)
  loss_fn = detectors.loss_fn(model, model_config, config)
  rules = tuple(tuple(rule) for rule in config.sharding_rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init, shardings = sharded_init(model, model_config, kept_tokens, optimizer, KEY, mesh,
                                   rules)
    step = jit_train_step(loss_fn, optimizer, schedules, shardings, mesh,
                          config.mesh.batch_axes, config.grad_accumulation_steps,
                          config.grad_reduce_dtype)
  return Training(config=config, model_config=model_config, model=model,
                  kept_token_inputs=kept_tokens, loss_fn=loss_fn,
                  optimizer=optimizer, schedules=schedules, mesh=mesh, rules=rules, init=init,
                  shardings=shardings, step=step)


def compile_ahead(training: Training, state: TrainState, batch: Mapping[str, Any]) -> Any:
  """``training.step`` compiled before the first step for ``state`` and global batches like
  ``batch`` (arrays or ``jax.ShapeDtypeStruct``s in their shardings); call the result in its
  place. Logs the memory each device needs; where the runtime reports a device capacity
  (``device_capacity``) that the step exceeds, raises at once with the batch, the memory
  needed and the capacity instead of failing out of memory mid-run."""
  with training.scope():
    compiled = training.step.trace(*abstract_like((state, dict(batch)))).lower().compile()
  return check_memory(compiled, jax.tree.leaves(batch)[0].shape[0])


def abstract_like(tree: Any) -> Any:
  """``tree``'s arrays (or abstract arrays) as ``jax.ShapeDtypeStruct`` leaves carrying their
  shardings."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


def check_memory(compiled: Any, global_batch: int) -> Any:
  """``compiled`` (the train step at ``global_batch``) after logging the memory each device
  needs; raises where that exceeds the device's capacity (``device_capacity``)."""
  memory = compiled.memory_analysis()
  needed = memory_needed(memory)
  capacity = device_capacity(jax.local_devices()[0])
  logging.info("train step compiled: %.3f GiB per device (arguments %.3f, temporaries %.3f, "
               "outputs %.3f, aliased %.3f) of %s", needed / 2**30,
               memory.argument_size_in_bytes / 2**30, memory.temp_size_in_bytes / 2**30,
               memory.output_size_in_bytes / 2**30, memory.alias_size_in_bytes / 2**30,
               "an unreported capacity" if capacity is None else f"{capacity / 2**30:.3f} GiB")
  if capacity is not None and needed > capacity:
    raise ValueError(
        f"batch_size {global_batch} does not fit: the train step needs {needed} bytes "
        f"({needed / 2**30:.2f} GiB) per device, the device has {capacity} bytes "
        f"({capacity / 2**30:.2f} GiB); lower batch_size, raise mesh.fsdp, or set "
        f"model.remat=True or grad_accumulation_steps")
  return compiled


def memory_needed(memory: Any) -> int:
  """Bytes per device a compiled program needs (``Compiled.memory_analysis()``): arguments +
  outputs − outputs aliased to donated arguments + temporaries."""
  return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes)


def device_capacity(device: Any) -> Optional[int]:
  """The bytes the runtime lets ``device`` allocate (``memory_stats()["bytes_limit"]``), or
  None where it reports none (CPUs)."""
  stats = device.memory_stats() or {}
  return stats.get("bytes_limit")
