"""The training loop: mesh, sharded state, jitted step, batches, checkpoints, evaluation and
logging.

A run in a workdir that holds checkpoints resumes from the latest one (state and input
position), so re-running the same command after a kill continues the same run. SIGTERM
(preemption) saves a checkpoint at the next step boundary and exits 0.
"""

from __future__ import annotations

import pathlib
import signal
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import numpy as np
from absl import logging

from havic_jax import augment, checkpoints, detectors, input_pipeline, masking, pseudo_fakes
from havic_jax import sharding
from havic_jax.metric_writer import MetricWriter, parameter_overview, train_metrics_from
from havic_jax.models import stacking
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.metrics import binary_metrics
from havic_jax.optimizer import PRETRAINED_MODULES, make_optimizer
from havic_jax.visualize import reconstruction_images
from havic_jax.synthetic_batches import local_batch_size, synthetic_batches
from havic_jax.train_step import (TrainState, abstract_state, create_sharded_state,
                                  jit_train_step, unit_video)


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


def prepared_data_path(config: Any, workdir: str) -> pathlib.Path:
  """The prepared directory ``config.data`` names (generating the synthetic corpus if asked)."""
  data_cfg = config.data
  if data_cfg.source == "synthetic_corpus":
    return synthetic_corpus(
        pathlib.Path(data_cfg.path or pathlib.Path(workdir) / "synthetic_data"),
        data_cfg.synthetic_videos, config.seed)
  if data_cfg.source == "prepared":
    if not data_cfg.path:
      raise ValueError("data.source='prepared' needs --config.data.path=DIR, a directory "
                       "written by `python -m data_pipelines.prepare`")
    return pathlib.Path(data_cfg.path)
  raise ValueError(f"data.source must be 'prepared', 'synthetic_corpus' or 'random', got "
                   f"{data_cfg.source!r}")


def open_training_data(config: Any, workdir: str) -> Optional[input_pipeline.PreparedData]:
  """The prepared data ``config.data`` names (read once per run), or None for
  ``data.source="random"``."""
  if config.data.source == "random":
    return None
  return input_pipeline.open_prepared(str(prepared_data_path(config, workdir)))


def training_iterator(data: input_pipeline.PreparedData, config: Any, cfg: ModelConfig
                      ) -> Any:
  """This process's Grain batch iterator over ``data`` per ``config.data`` (checkpointable)."""
  detector = detectors.info(config)
  stage_options = ({"video_mask_ratio": config.pretrain.video_mask_ratio,
                    "audio_mask_ratio": config.pretrain.audio_mask_ratio}
                   if config.stage == "pretrain" else
                   {"augmentation": augment.Options(**config.augment)})
  if config.stage == "finetune" and config.pseudo_fakes.enabled:
    options = {k: v for k, v in config.pseudo_fakes.items() if k != "enabled"}
    stage_options["pseudo_fake_options"] = pseudo_fakes.PseudoFakeOptions(**options)
  split = config.data.split or None
  real_only = config.data.real_only or (detector.real_only and config.stage == "pretrain")
  if detector.identities and config.stage == "pretrain":
    indices = data.split_indices(split)
    stage_options.update(
        identities=data.identity_vocabulary(data.real_indices(indices) if real_only
                                            else indices),
        clips_per_identity=config.data.clips_per_identity)
  mixture = tuple((input_pipeline.open_prepared(path), share) for path, share in
                  input_pipeline.parse_mixture(config.data.get("mixture", "")))
  dataset = input_pipeline.training_dataset(
      data, split, cfg, config.stage, local_batch_size(config.batch_size), config.seed,
      balanced=config.data.balanced, workers=config.data.workers, real_only=real_only,
      mixture=mixture, **stage_options)
  return iter(dataset)


def with_identity_count(config: Any, data: Optional[input_pipeline.PreparedData]) -> None:
  """Fills ``config.detector.num_identities`` (0: not set) with the training data's identity
  count for detectors with identity classifiers."""
  if detectors.detector_name(config) != "voice_face" or config.detector.num_identities:
    return
  if data is None:  # random batches: ids below the batch size
    config.detector.num_identities = config.batch_size
    return
  indices = data.real_indices(data.split_indices(config.data.split or None))
  config.detector.num_identities = len(data.identity_vocabulary(indices))


def load_backbone(init_from: str) -> Dict[str, Any]:
  """Every top-level module's parameters (NumPy) of a training workdir or an export."""
  if (pathlib.Path(init_from) / checkpoints.CHECKPOINT_DIR).is_dir():
    _, params = checkpoints.load_params(init_from)
  else:
    from havic_jax.export import load_pretrained
    _, params = load_pretrained(init_from)
  return dict(params)


def with_backbone(state: TrainState, shardings: Any, backbone: Mapping[str, Any]) -> TrainState:
  """``state`` with the modules it shares with ``backbone`` (by name) replaced by
  ``backbone``'s, placed in their shardings; shapes must match, and every pretrained module
  (``PRETRAINED_MODULES``) of the model must be there."""
  params = dict(state.params)
  shared = [name for name in backbone if name in params]
  missing = [name for name in params if name in PRETRAINED_MODULES and name not in backbone]
  if not shared or missing:
    raise ValueError(f"init_from: the checkpoint has modules {sorted(backbone)}; this model "
                     f"needs {sorted(n for n in params if n in PRETRAINED_MODULES)}; pass a "
                     f"pretraining workdir or an export of one")
  for name in shared:
    tree = backbone[name]
    expected = jax.tree.map(lambda x: x.shape, params[name])
    if jax.tree.map(np.shape, tree) != expected:
      raise ValueError(f"init_from: the shapes of '{name}' differ from this config's model; "
                       f"use the model sizes the checkpoint was trained with")
    params[name] = jax.device_put(tree, shardings.params[name])
  return state.replace(params=params)


class PreemptionFlag:
  """Set by SIGTERM (a preemption notice); the loop checkpoints and stops at the next step."""

  def __init__(self):
    self.raised = False
    self.previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self.raised = True

  def restore(self) -> None:
    signal.signal(signal.SIGTERM, self.previous)


class WindowLog:
  """Writes each logging window's averages without stalling the device.

  When a window closes its values are still on the device: their copy to the host starts
  then (``copy_to_host_async``) and they are read after the next step has been queued, so the
  loop never waits for the device with nothing queued. Throughput is measured between those
  reads (each one follows the completion of its window's last step)."""

  def __init__(self, writer: MetricWriter, batch_size: int, start_step: int):
    self.writer, self.batch_size = writer, batch_size
    self.pending: Optional[Tuple[int, Dict[str, Any], float]] = None
    self.data_wait, self.last_step, self.last_time = 0.0, start_step, time.time()

  def close_window(self, step: int, values: Dict[str, Any]) -> None:
    for value in jax.tree.leaves(values):
      value.copy_to_host_async()
    self.pending = (step, values, self.data_wait)
    self.data_wait = 0.0

  def finish(self) -> Dict[str, float]:
    """Reads and writes the pending window; returns its metrics."""
    step, values, data_wait = self.pending
    metrics = {k: float(v) for k, v in jax.device_get(values).items()}
    now = time.time()
    elapsed, steps = now - self.last_time, step - self.last_step
    metrics.update(steps_per_second=steps / elapsed,
                   samples_per_second=steps * self.batch_size / elapsed,
                   data_wait_fraction=data_wait / elapsed)
    self.writer.write(step, metrics)
    self.pending, self.last_step, self.last_time = None, step, now
    return metrics


def make_eval_step(scorer: Callable, param_shardings: Any, mesh: Any) -> Callable:
  """Jitted detector forward: (params, batch) -> (fake probability, overall label, valid),
  each [global batch], replicated so every process sees them all. ``scorer`` is the
  detector's window scorer (``detectors.window_scorer``)."""
  def eval_step(params, batch):
    fake_logit = scorer(params, batch["video"], batch["audio"])["overall"]
    return jax.nn.sigmoid(fake_logit), batch["overall_label"], batch["valid"]
  replicated = sharding.replicated(mesh)
  return jax.jit(eval_step, in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(replicated,) * 3)


def make_reconstruct(model: nn.Module, cfg: ModelConfig, config: Any, param_shardings: Any,
                     mesh: Any) -> Callable[[Any, Mapping[str, Any]], Dict[str, np.ndarray]]:
  """(params, global batch) -> reconstruction images of the batch's first sample (input /
  masked / last decoder head's output), for the metric writer."""
  pcfg = config.pretrain

  def forward(params, batch):
    video = unit_video(batch["video"][:1])
    if "ids_keep_video" in batch:
      ids_v, ids_a = batch["ids_keep_video"][:1], batch["ids_keep_audio"][:1]
    else:
      ids_v, ids_a = masking.pretraining_masks(jax.random.PRNGKey(0), 1, cfg,
                                               pcfg.video_mask_ratio, pcfg.audio_mask_ratio)
    out = model.apply({"params": params}, video, batch["audio"][:1], ids_v, ids_a,
                      deterministic=True)
    return (video[0], batch["audio"][0], ids_v[0], ids_a[0], out["video_recon"][-1][0],
            out["audio_recon"][-1][0])

  jitted = jax.jit(forward, in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))
  return lambda params, batch: reconstruction_images(
      *[np.asarray(x) for x in jax.device_get(jitted(params, batch))], cfg)


def evaluate(eval_step: Callable, params: Any, data: input_pipeline.PreparedData, config: Any,
             cfg: ModelConfig, mesh: Any) -> Dict[str, float]:
  """ACC / AP / AUC of the clips of ``config.data.eval_split`` (clip level)."""
  dataset = input_pipeline.eval_dataset(data, config.data.eval_split or None, cfg,
                                        local_batch_size(config.batch_size))
  scores, labels = [], []
  for batch in dataset:
    score, label, valid = jax.device_get(eval_step(params, sharding.global_batch(batch, mesh)))
    scores.append(score[valid > 0])
    labels.append(label[valid > 0])
  return binary_metrics(np.concatenate(scores), np.concatenate(labels))


def run(config: Any, workdir: str) -> Tuple[TrainState, Dict[str, float]]:
  """Trains ``config.stage`` ("pretrain" or "finetune") up to ``config.num_steps`` steps,
  resuming from ``workdir``'s latest checkpoint if there is one.

  Returns the final state and the last logged metrics."""
  cfg = model_config_from(config.model, config.compat)
  data = open_training_data(config, workdir)
  with_identity_count(config, data)
  model = detectors.build_model(cfg, config)
  kind = detectors.model_kind(config)
  optimizer, schedules = make_optimizer(config)
  loss_fn = detectors.loss_fn(model, cfg, config)
  checkpoints.write_config(workdir, config)
  data_iterator = training_iterator(data, config, cfg) if data is not None else None
  mesh = sharding.make_mesh(config.mesh)
  rules = tuple(tuple(rule) for rule in config.sharding_rules)
  manager = checkpoints.make_manager(workdir, config.checkpoint)
  preemption = PreemptionFlag()
  writer = None
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      rng = jax.random.PRNGKey(config.seed)
      if manager.latest_step() is not None:
        target, shardings = abstract_state(model, cfg, kind, optimizer, rng, mesh, rules)
        state, start = checkpoints.restore(manager, target, data_iterator)
        logging.info("resumed from %s at step %d", manager.directory, start)
      else:
        state, shardings = create_sharded_state(model, cfg, kind, optimizer, rng, mesh, rules)
        if config.init_from:
          backbone = stacking.to_layout(load_backbone(config.init_from), cfg)
          state = with_backbone(state, shardings, backbone)
          logging.info("initialised %s from %s",
                       ", ".join(n for n in backbone if n in state.params), config.init_from)
      start = int(state.step)
      batches = data_iterator if data_iterator is not None else synthetic_batches(
          cfg, config.stage, config.batch_size, config.seed, fixed=config.data.fixed_batch,
          start_step=start)
      step_fn = jit_train_step(loss_fn, optimizer, schedules, shardings, mesh,
                               config.grad_accumulation_steps)
      scored = config.stage == "finetune" or detectors.detector_name(config) != detectors.HAVIC
      evaluates = (scored and config.eval_every
                   and data is not None)  # random batches have no eval split
      eval_step = (make_eval_step(detectors.window_scorer(cfg, config), shardings.params, mesh)
                   if evaluates else None)
      reconstruct = (make_reconstruct(model, cfg, config, shardings.params, mesh)
                     if kind == "pretrain" and config.image_every else None)
      writer = MetricWriter(workdir, config.num_steps, start)
      if start == 0:
        writer.write_text("parameters", parameter_overview(state.params))
      metrics: Dict[str, float] = {}
      window = None  # clu averages of the steps since the last log, kept on the device
      start_window = jax.jit(train_metrics_from)
      accumulate = jax.jit(lambda window, scalars: window.merge(train_metrics_from(scalars)))
      log = WindowLog(writer, config.batch_size, start)
      eval_metrics = None
      for step in range(start, config.num_steps):
        t = time.time()
        batch = sharding.global_batch(next(batches), mesh)
        log.data_wait += time.time() - t
        state, device_metrics = step_fn(state, batch)
        if log.pending:  # the last window's values, read while this step runs
          metrics = log.finish()
        averaged = {k: v for k, v in device_metrics.items() if k not in schedules}
        window = start_window(averaged) if window is None else accumulate(window, averaged)
        done = step + 1
        last = done == config.num_steps
        if done % config.log_every == 0 or last:
          log.close_window(done, dict(window.compute(),
                                      **{k: device_metrics[k] for k in schedules}))
          window = None
        eval_metrics = None
        if eval_step is not None and (done % config.eval_every == 0 or last):
          scores = evaluate(eval_step, state.params, data, config, cfg, mesh)
          writer.write(done, scores, prefix="eval")
          eval_metrics = {f"eval/{k}": v for k, v in scores.items()}
        if reconstruct is not None and done % config.image_every == 0:
          writer.write_images(done, reconstruct(state.params, batch))
        preempted = preemption.raised or (jax.process_count() > 1
                                          and manager.reached_preemption(done))
        if done % config.checkpoint.every_steps == 0 or last or preempted or eval_metrics:
          checkpoints.save(manager, done, state, data_iterator, eval_metrics,
                           force=last or preempted)
        if preempted:
          logging.warning("stopped at step %d after a preemption notice", done)
          break
      if log.pending:
        metrics = log.finish()
      if eval_metrics:
        metrics.update(eval_metrics)
    manager.wait_until_finished()
  finally:
    manager.close()
    preemption.restore()
    if writer is not None:
      writer.close()
  return state, metrics
