"""The training loop: mesh, sharded state, jitted step, batches, checkpoints, evaluation and
logging.

A run in a workdir that holds checkpoints resumes from the latest one (state and input
position), so re-running the same command after a kill continues the same run. SIGTERM
(preemption) to any process makes every process save the same step and exit 0
(``periodic.Preemption``). The workdir may be a ``gs://`` URI; the training data is read from
local paths.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from havic_jax.data import augment, input_pipeline, pseudo_fakes, records
from havic_jax.models import masking
from havic_jax.checkpoints import runs
from havic_jax import detectors
from havic_jax.training import builder, flops, prefetch, run_length
from havic_jax.training.periodic import FiniteCheck, Preemption, Profile, WindowLog
from havic_jax import sharding, storage
from havic_jax.training.metric_writer import MetricWriter, parameter_overview, train_metrics_from
from havic_jax.models.config import ModelConfig
from havic_jax.evaluation.metrics import binary_metrics
from havic_jax.training.visualize import reconstruction_images
from havic_jax.models.inputs import unit_video
from havic_jax.training.train_step import TrainState


def synthetic_corpus(path: pathlib.Path, num_videos: int, seed: int) -> pathlib.Path:
  """``path/prepared``: the synthetic corpus generated and prepared under ``path`` unless a
  previous run left it there."""
  prepared = path / "prepared"
  if not (prepared / records.MANIFEST).is_file():
    if jax.process_count() > 1:
      raise ValueError("data.source='synthetic_corpus' is a single-process demo; prepare data "
                       "with data_pipelines.prepare and use data.source='prepared'")
    from havic_jax.data import prepare, synthetic
    logging.info("generating %d synthetic videos in %s", num_videos, path)
    synthetic.generate_corpus(path / "videos", num_videos, seed=seed)
    prepare.prepare("fakeavceleb", str(path / "videos"), str(prepared), workers=1)
  return prepared


def prepared_data_path(config: Any, workdir: str) -> pathlib.Path:
  """The prepared directory ``config.data`` names (generating the synthetic corpus if asked)."""
  data_cfg = config.data
  if data_cfg.source == "synthetic_corpus":
    location = data_cfg.path or os.path.join(workdir, "synthetic_data")
    return synthetic_corpus(
        pathlib.Path(storage.local_only(location, "data.path (default WORKDIR/synthetic_data)")),
        data_cfg.synthetic_videos, config.seed)
  if data_cfg.source == "prepared":
    if not data_cfg.path:
      raise ValueError("data.source='prepared' needs --config.data.path=DIR, a directory "
                       "written by `python -m data_pipelines.prepare`")
    return pathlib.Path(storage.local_only(data_cfg.path, "data.path"))
  raise ValueError(f"data.source must be 'prepared', 'synthetic_corpus' or 'random', got "
                   f"{data_cfg.source!r}")


def open_training_data(config: Any, workdir: str) -> Optional[records.PreparedData]:
  """The prepared data ``config.data`` names (read once per run), or None for
  ``data.source="random"``."""
  if config.data.source == "random":
    return None
  return records.open_prepared(str(prepared_data_path(config, workdir)))


def read_options(config: Any) -> grain.ReadOptions:
  """Grain's read-ahead for ``config.data``: ``read_threads`` threads, ``prefetch_batches``
  batches."""
  return grain.ReadOptions(num_threads=config.data.read_threads,
                           prefetch_buffer_size=config.data.prefetch_batches)


def training_iterator(data: records.PreparedData, config: Any, cfg: ModelConfig, mesh: Any
                      ) -> Any:
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
      data, split, cfg, config.stage, sharding.local_batch_size(config.batch_size),
      config.seed, balanced=config.data.balanced, workers=config.data.workers,
      read_options=read_options(config), real_only=real_only, mixture=mixture,
      shard_index=shard_index, shard_count=shard_count, **stage_options)
  return iter(dataset)


def make_eval_step(scorer: Callable, param_shardings: Any, mesh: Any, batch_axes: Sequence[str]
                   ) -> Callable:
  """Jitted detector forward: (params, batch) -> (fake probability, overall label, valid),
  each [global batch], replicated so every process sees them all. ``scorer`` is the
  detector's window scorer (``detectors.window_scorer``)."""
  def eval_step(params, batch):
    fake_logit = scorer(params, batch["video"], batch["audio"])["overall"]
    return jax.nn.sigmoid(fake_logit), batch["overall_label"], batch["valid"]
  replicated = sharding.replicated(mesh)
  return jax.jit(eval_step, in_shardings=(param_shardings,
                                         sharding.batch_sharding(mesh, batch_axes)),
                 out_shardings=(replicated,) * 3)


def make_reconstruct(model: nn.Module, cfg: ModelConfig, config: Any, param_shardings: Any,
                     mesh: Any) -> Callable[[Any, Mapping[str, Any]], Dict[str, np.ndarray]]:
  """(params, global batch) -> reconstruction images of the batch's first sample (input /
  masked / last decoder head's output), for the metric writer."""
  pcfg = config.pretrain

  def forward(params, batch):
    video = unit_video(batch["video"][:1], jnp.float32)
    if "ids_keep_video" in batch:
      ids_v, ids_a = batch["ids_keep_video"][:1], batch["ids_keep_audio"][:1]
    else:
      ids_v, ids_a = masking.pretraining_masks(jax.random.PRNGKey(0), 1, cfg,
                                               pcfg.video_mask_ratio, pcfg.audio_mask_ratio)
    out = model.apply({"params": params}, video, batch["audio"][:1], ids_v, ids_a,
                      deterministic=True)
    return (video[0], batch["audio"][0], ids_v[0], ids_a[0], out["video_recon"][-1][0],
            out["audio_recon"][-1][0])

  jitted = jax.jit(forward, in_shardings=(param_shardings,
                                          sharding.batch_sharding(mesh, config.mesh.batch_axes)),
                   out_shardings=sharding.replicated(mesh))
  return lambda params, batch: reconstruction_images(
      *[np.asarray(x) for x in jax.device_get(jitted(params, batch))], cfg)


def evaluate(eval_step: Callable, params: Any, data: records.PreparedData, config: Any,
             cfg: ModelConfig, mesh: Any) -> Dict[str, float]:
  """ACC / AP / AUC of the clips of ``config.data.eval_split`` (clip level)."""
  dataset = input_pipeline.eval_dataset(data, config.data.eval_split or None, cfg,
                                        sharding.local_batch_size(config.batch_size),
                                        read_options=read_options(config))
  scores, labels = [], []
  for batch in dataset:
    score, label, valid = jax.device_get(eval_step(params, sharding.global_batch(
        batch, mesh, config.mesh.batch_axes)))
    scores.append(score[valid > 0])
    labels.append(label[valid > 0])
  return binary_metrics(np.concatenate(scores), np.concatenate(labels))


def run(config: Any, workdir: str) -> Tuple[TrainState, Dict[str, float]]:
  """Trains ``config.stage`` ("pretrain" or "finetune") up to ``config.num_steps`` steps,
  resuming from ``workdir``'s latest checkpoint if there is one.

  Returns the final state and the last logged metrics."""
  data = open_training_data(config, workdir)
  mesh = sharding.make_mesh(config.mesh)
  if runs.has_config(workdir):  # a resumed run keeps its schedule unless config.reschedule
    derived = builder.with_run_length(builder.with_identity_count(config, data), data)
    config = run_length.resume_schedule(config, runs.read_config(workdir).to_dict(),
                                        derived.to_dict())
  training = builder.build(config, mesh, data)
  config, cfg, model = training.config, training.cfg, training.model
  schedules = training.schedules
  logging.info("%s", run_length.describe(config))
  runs.write_config(workdir, config)
  data_iterator = training_iterator(data, config, cfg, mesh) if data is not None else None
  peak, peak_source = flops.device_peak(jax.local_devices()[0], cfg.dtype)  # outside the mesh
  manager = runs.make_manager(workdir, config.checkpoint)
  preemption = Preemption(manager)
  writer = None
  try:
    with training.scope():
      shardings = training.shardings
      if manager.latest_step() is not None:
        state, start = runs.restore(manager, training.abstract_state(), data_iterator)
        logging.info("resumed from %s at step %d", manager.directory, start)
      else:
        state = training.initial_state()
      start = int(state.step)
      batches = prefetch.DevicePrefetch(
          data_iterator if data_iterator is not None else training.random_batches(
              config.batch_size, fixed=config.data.fixed_batch, start_step=start),
          training.global_batch, config.data.device_prefetch)
      step_fn = builder.compile_ahead(training, state, batches.peek())
      finite = FiniteCheck()
      scored = config.stage not in detectors.info(config).unscored_stages
      evaluates = (scored and config.eval_every
                   and data is not None)  # random batches have no eval split
      eval_step = (make_eval_step(detectors.window_scorer(
                       cfg, detectors.detector_name(config), config.stage,
                       detectors.options_of(config)), shardings.params, mesh,
                       config.mesh.batch_axes)
                   if evaluates else None)
      reconstruct = (make_reconstruct(model, cfg, config, shardings.params, mesh)
                     if training.kind == "pretrain" and config.image_every else None)
      writer = MetricWriter(workdir, config.num_steps, start)
      if start == 0:
        writer.write_text("parameters", parameter_overview(state.params))
      metrics: Dict[str, float] = {}
      window = None  # clu averages of the steps since the last log, kept on the device
      start_window = jax.jit(train_metrics_from)
      accumulate = jax.jit(lambda window, scalars: window.merge(train_metrics_from(scalars)))
      log = WindowLog(writer, config.batch_size, start,
                      flops.train_step_flops(training, state, batches.peek()), peak)
      logging.info("train/mfu: model FLOPs of the step over %.4g TFLOP/s per device (%s)",
                   peak / 1e12, peak_source)
      profile = Profile(config.profile, workdir)
      eval_metrics = None
      for step in range(start, config.num_steps):
        profile.before(step)
        waited = batches.wait_seconds
        batch = next(batches)
        log.data_wait += batches.wait_seconds - waited
        state, device_metrics = step_fn(state, batch)
        finite.update(state.step, device_metrics)
        if log.pending:  # the last window's values, read while this step runs
          metrics = log.finish()
          finite.check_marked()
        averaged = {k: v for k, v in device_metrics.items() if k not in schedules}
        window = start_window(averaged) if window is None else accumulate(window, averaged)
        done = step + 1
        last = done == config.num_steps
        if done % config.log_every == 0 or last:
          log.close_window(done, dict(window.compute(),
                                      **{k: device_metrics[k] for k in schedules}))
          finite.mark(done)
          window = None
        eval_metrics = None
        if eval_step is not None and (done % config.eval_every == 0 or last):
          scores = evaluate(eval_step, state.params, data, config, cfg, mesh)
          writer.write(done, scores, prefix="eval")
          eval_metrics = {f"eval/{k}": v for k, v in scores.items()}
        profile.after(done, state, last)
        if reconstruct is not None and done % config.image_every == 0:
          writer.write_images(done, reconstruct(state.params, batch))
        preempted = preemption.reached(done)
        if done % config.checkpoint.every_steps == 0 or last or preempted or eval_metrics:
          finite.check(done)
          runs.save(manager, done, state, batches if batches.checkpointable else None,
                    eval_metrics, force=last or preempted)
          if log.pending:  # the log holds every step up to the checkpoint
            metrics = log.finish()
          writer.flush()
        if preempted:
          logging.warning("stopped at step %d after a preemption notice", done)
          break
      if log.pending:
        metrics = log.finish()
        finite.check_marked()
      if eval_metrics:
        metrics.update(eval_metrics)
    manager.wait_until_finished()
  finally:
    manager.close()
    preemption.restore()
    if writer is not None:
      writer.close()
  return state, metrics
