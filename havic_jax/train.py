"""The training loop: mesh, sharded state, jitted step, batches and logging."""

from __future__ import annotations

import pathlib
import time
from typing import Any, Dict, Iterator, Tuple

import flax.linen as nn
import jax
from absl import logging

from havic_jax import input_pipeline, sharding
from havic_jax.metric_writer import MetricWriter
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.havic import build_model
from havic_jax.optimizer import make_optimizer
from havic_jax.synthetic_batches import local_batch_size, synthetic_batches
from havic_jax.train_step import (TrainState, create_sharded_state, finetune_loss_fn,
                                  jit_train_step, pretrain_loss_fn)


def synthetic_corpus(path: pathlib.Path, num_videos: int, seed: int) -> pathlib.Path:
  """``path/prepared``: the synthetic corpus generated and prepared under ``path`` unless a
  previous run left it there."""
  prepared = path / "prepared"
  if not (prepared / input_pipeline.MANIFEST).is_file():
    if jax.process_count() > 1:
      raise ValueError("data.source='synthetic_corpus' is a single-process demo; prepare data "
                       "with data_pipelines.prepare and use data.source='prepared'")
    from data_pipelines import prepare, synthetic
    logging.info("generating %d synthetic videos in %s", num_videos, path)
    synthetic.generate_corpus(path / "videos", num_videos, seed=seed)
    prepare.prepare("fakeavceleb", str(path / "videos"), str(prepared), workers=1)
  return prepared


def training_batches(config: Any, cfg: ModelConfig, workdir: str) -> Iterator[Dict[str, Any]]:
  """This process's batches per ``config.data`` (see ``configs/common.py:data_config``)."""
  data_cfg = config.data
  local_batch = local_batch_size(config.batch_size)
  if data_cfg.source == "random":
    return synthetic_batches(cfg, config.stage, config.batch_size, config.seed,
                             fixed=data_cfg.fixed_batch)
  if data_cfg.source == "synthetic_corpus":
    path = synthetic_corpus(pathlib.Path(data_cfg.path or pathlib.Path(workdir) / "synthetic_data"),
                            data_cfg.synthetic_videos, config.seed)
  elif data_cfg.source == "prepared":
    if not data_cfg.path:
      raise ValueError("data.source='prepared' needs --config.data.path=DIR, a directory "
                       "written by `python -m data_pipelines.prepare`")
    path = data_cfg.path
  else:
    raise ValueError(f"data.source must be 'prepared', 'synthetic_corpus' or 'random', got "
                     f"{data_cfg.source!r}")
  ratios = ({"video_mask_ratio": config.pretrain.video_mask_ratio,
             "audio_mask_ratio": config.pretrain.audio_mask_ratio}
            if config.stage == "pretrain" else {})
  dataset = input_pipeline.training_dataset(
      input_pipeline.open_prepared(str(path)), data_cfg.split or None, cfg, config.stage,
      local_batch, config.seed, balanced=data_cfg.balanced, workers=data_cfg.workers, **ratios)
  return iter(dataset)


def run(config: Any, workdir: str) -> Tuple[TrainState, Dict[str, float]]:
  """Trains ``config.stage`` ("pretrain" or "finetune") for ``config.num_steps`` steps.

  Returns the final state and the last logged metrics."""
  cfg = model_config_from(config.model, config.compat)
  model = build_model(cfg, config.stage)
  optimizer, schedules = make_optimizer(config)
  loss_fn = (pretrain_loss_fn(model, cfg, config) if config.stage == "pretrain"
             else finetune_loss_fn(model))
  batches = training_batches(config, cfg, workdir)
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
