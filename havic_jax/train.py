"""The training loop: mesh, sharded state, jitted step, batches and logging."""

from __future__ import annotations

import time
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax

from havic_jax import sharding
from havic_jax.metric_writer import MetricWriter
from havic_jax.models.config import model_config_from
from havic_jax.models.havic import build_model
from havic_jax.optimizer import make_optimizer
from havic_jax.synthetic_batches import synthetic_batches
from havic_jax.train_step import (TrainState, create_sharded_state, finetune_loss_fn,
                                  jit_train_step, pretrain_loss_fn)


def run(config: Any, workdir: str) -> Tuple[TrainState, Dict[str, float]]:
  """Trains ``config.stage`` ("pretrain" or "finetune") for ``config.num_steps`` steps.

  Returns the final state and the last logged metrics."""
  cfg = model_config_from(config.model, config.compat)
  model = build_model(cfg, config.stage)
  optimizer, schedules = make_optimizer(config)
  loss_fn = (pretrain_loss_fn(model, cfg, config) if config.stage == "pretrain"
             else finetune_loss_fn(model))
  if config.data.source != "synthetic":
    raise ValueError(f"data.source={config.data.source!r}: only 'synthetic' is available")
  batches = synthetic_batches(cfg, config.stage, config.batch_size, config.seed,
                              fixed=config.data.fixed_batch)
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple(tuple(rule) for rule in config.sharding_rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, shardings = create_sharded_state(model, cfg, config.stage, optimizer,
                                            jax.random.PRNGKey(config.seed), mesh, rules)
    step_fn = jit_train_step(loss_fn, optimizer, schedules, shardings, mesh)
    writer = MetricWriter(workdir, config.num_steps, int(state.step))
    metrics: Dict[str, float] = {}
    window_start, data_wait = time.time(), 0.0
    for step in range(int(state.step), config.num_steps):
      t = time.time()
      batch = sharding.global_batch(next(batches), mesh)
      data_wait += time.time() - t
      state, device_metrics = step_fn(state, batch)
      if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
        metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        elapsed = time.time() - window_start
        steps = (step + 1) % config.log_every or config.log_every
        metrics.update(steps_per_second=steps / elapsed,
                       samples_per_second=steps * config.batch_size / elapsed,
                       data_wait_fraction=data_wait / elapsed)
        writer.write(step + 1, metrics)
        window_start, data_wait = time.time(), 0.0
  return state, metrics
