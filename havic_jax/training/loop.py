"""The training loop: mesh, sharded state, jitted step and batches, with the jobs around the
steps done by hooks (``training.hooks``, ``training.validation``).

A run in a workdir that holds checkpoints resumes from the latest one (state and input
position), so re-running the same command after a kill continues the same run. SIGTERM
(preemption) to any process makes every process save the same step and exit 0
(``hooks.Preemption``). The workdir may be a ``gs://`` URI; the training data is read from
local paths.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import grain
import jax
from absl import logging

from havic_jax import detectors, sharding
from havic_jax.checkpoints import runs
from havic_jax.data import augment, input_pipeline, pseudo_fakes, records, training_data
from havic_jax.models.config import ModelConfig
from havic_jax.training import builder, flops, prefetch, run_length
from havic_jax.training.hooks import (Checkpoint, FiniteCheck, Hook, Preemption, Profile,
                                      StepEnd, WindowLog)
from havic_jax.training.metric_writer import MetricWriter, parameter_overview
from havic_jax.training.train_step import TrainState
from havic_jax.training.validation import Images, Validation


def read_options(config: Any) -> grain.ReadOptions:
  """Grain's read-ahead for ``config.data``: ``read_threads`` threads, ``prefetch_batches``
  batches."""
  return grain.ReadOptions(num_threads=config.data.read_threads,
                           prefetch_buffer_size=config.data.prefetch_batches)


def training_iterator(data: records.PreparedData, config: Any, model_config: ModelConfig,
                      mesh: Any) -> Any:
  """This process's Grain batch iterator over ``data`` per ``config.data`` (checkpointable):
  the rows of each global batch that ``mesh`` places on this process's devices."""
  detector = detectors.info(config)
  stage_options = ({"video_mask_ratio": config.pretrain.video_mask_ratio,
                    "audio_mask_ratio": config.pretrain.audio_mask_ratio}
                   if config.stage == "pretrain" else
                   {"augmentation": augment.Options(**config.augment)})
  if config.stage == "finetune" and config.pseudo_fakes.enabled:
    options = {k: v for k, v in config.pseudo_fakes.items() if k != "enabled"}
    stage_options["pseudo_fake_options"] = pseudo_fakes.PseudoFakeOptions(**options)
  split = config.data.split or None
  real_only = builder.real_clips_only(config)
  if detector.identities and config.stage == "pretrain":
    indices = data.split_indices(split)
    stage_options.update(
        identities=data.identity_vocabulary(data.real_indices(indices) if real_only
                                            else indices),
        clips_per_identity=config.data.clips_per_identity)
  mixture = tuple((records.open_prepared(path), share) for path, share in
                  input_pipeline.parse_mixture(config.data.get("mixture", "")))
  shard_index, shard_count = sharding.process_block(mesh, config.mesh.batch_axes,
                                                    config.batch_size)
  dataset = input_pipeline.training_dataset(
      data, split, model_config, config.stage, sharding.local_batch_size(config.batch_size),
      config.seed, balanced=config.data.balanced, workers=config.data.workers,
      read_options=read_options(config), real_only=real_only, mixture=mixture,
      shard_index=shard_index, shard_count=shard_count, **stage_options)
  return iter(dataset)


def resumed_config(config: Any, workdir: str, data: Optional[records.PreparedData]) -> Any:
  """``config``, or in a workdir of an earlier run, ``config`` with that run's schedule
  (``run_length.resume_schedule``: kept unless ``config.reschedule``)."""
  if not runs.has_config(workdir):
    return config
  derived = builder.with_run_length(builder.with_identity_count(config, data), data)
  return run_length.resume_schedule(config, runs.read_config(workdir).to_dict(),
                                    derived.to_dict())


def start_state(training: builder.Training, manager: Any, data_iterator: Any
                ) -> Tuple[TrainState, prefetch.DevicePrefetch]:
  """The state to train from (restored with the input position where ``manager`` holds a
  checkpoint, else new) and the device batches from its step on. Call inside the scope."""
  if manager.latest_step() is not None:
    state, step = runs.restore(manager, training.abstract_state(), data_iterator)
    logging.info("resumed from %s at step %d", manager.directory, step)
  else:
    state = training.initial_state()
  config = training.config
  source = data_iterator if data_iterator is not None else training.random_batches(
      config.batch_size, fixed=config.data.fixed_batch, start_step=int(state.step))
  return state, prefetch.DevicePrefetch(source, training.global_batch,
                                        config.data.device_prefetch)


def make_hooks(training: builder.Training, data: Optional[records.PreparedData], state: Any,
               batches: prefetch.DevicePrefetch, writer: MetricWriter, manager: Any,
               preemption: Preemption, peak: float, workdir: str
               ) -> Tuple[List[Hook], WindowLog, Any]:
  """The run's hooks in the order they act after a step, its window log and its validation
  (None where the stage is unscored or the batches are random). ``peak``: one device's peak
  FLOP/s, for the MFU."""
  config, start = training.config, int(state.step)
  finite = FiniteCheck(config.log_every)
  log = WindowLog(writer, batches, config.log_every, config.batch_size, training.schedules,
                  start, flops.train_step_flops(training, state, batches.peek()), peak)
  scored = config.stage not in detectors.info(config).unscored_stages
  validation = (Validation(training, data, writer, read_options(config))
                if scored and config.eval_every and data is not None else None)
  images = (Images(training, writer)
            if training.kept_token_inputs and config.image_every else None)
  checkpoint = Checkpoint(manager, config.checkpoint.every_steps, batches, preemption, finite,
                          log)
  hooks = [finite, log, validation, Profile(config.profile, workdir), images, checkpoint]
  return [hook for hook in hooks if hook is not None], log, validation


def train_steps(step_fn: Any, state: TrainState, batches: Iterator[Dict[str, jax.Array]],
                hooks: List[Hook], num_steps: int) -> TrainState:
  """Steps from ``state``'s step up to ``num_steps`` (or a hook's stop), each surrounded by
  the hooks; returns the last state."""
  for step in range(int(state.step), num_steps):
    for hook in hooks:
      hook.before_step(step)
    batch = next(batches)
    state, metrics = step_fn(state, batch)
    end = StepEnd(step + 1, step + 1 == num_steps, state, batch, metrics)
    for hook in hooks:
      hook.after_step(end)
    if end.stop:
      break
  for hook in hooks:
    hook.end_run()
  return state


def run(config: Any, workdir: str) -> Tuple[TrainState, Dict[str, float]]:
  """Trains ``config.stage`` ("pretrain" or "finetune") up to ``config.num_steps`` steps,
  resuming from ``workdir``'s latest checkpoint if there is one. ``config.data.source`` is
  "prepared" or "random" (``training_data.with_synthetic_corpus`` resolves the demo's).

  Returns the final state and the last logged metrics (with the last step's validation)."""
  data = training_data.open_training_data(config)
  mesh = sharding.make_mesh(config.mesh)
  training = builder.build(resumed_config(config, workdir, data), mesh, data)
  config = training.config
  logging.info("%s", run_length.describe(config))
  runs.write_config(workdir, config)
  data_iterator = (training_iterator(data, config, training.model_config, mesh)
                   if data is not None else None)
  peak, peak_source = flops.device_peak(jax.local_devices()[0], training.model_config.dtype)
  logging.info("train/mfu: model FLOPs of the step over %.4g TFLOP/s per device (%s)",
               peak / 1e12, peak_source)
  manager = runs.make_manager(workdir, config.checkpoint)
  writer = None
  try:
    with Preemption(manager) as preemption, training.scope():
      state, batches = start_state(training, manager, data_iterator)
      step_fn = builder.compile_ahead(training, state, batches.peek())
      writer = MetricWriter(workdir, config.num_steps, int(state.step))
      if int(state.step) == 0:
        writer.write_text("parameters", parameter_overview(state.params))
      hooks, log, validation = make_hooks(training, data, state, batches, writer, manager,
                                          preemption, peak, workdir)
      state = train_steps(step_fn, state, batches, hooks, config.num_steps)
    manager.wait_until_finished()
  finally:
    manager.close()
    if writer is not None:
      writer.close()
  return state, dict(log.metrics, **(validation.latest if validation else {}))
