"""The training loop's looks at the model: validation scores of the eval split
(:class:`Validation`) and reconstruction images of pretraining (:class:`Images`), each a hook
(``training.hooks``) with its jitted forward on the run's mesh."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax import detectors, sharding
from havic_jax.data import input_pipeline, records
from havic_jax.evaluation.metrics import binary_metrics
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video
from havic_jax.training.hooks import Hook, StepEnd, due
from havic_jax.training.metric_writer import MetricWriter
from havic_jax.training.visualize import reconstruction_images


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


def evaluate(eval_step: Callable, params: Any, data: records.PreparedData, config: Any,
             model_config: ModelConfig, mesh: Any, read_options: Any) -> Dict[str, float]:
  """ACC / AP / AUC of the clips of ``config.data.eval_split`` (clip level)."""
  dataset = input_pipeline.eval_dataset(data, config.data.eval_split or None, model_config,
                                        sharding.local_batch_size(config.batch_size),
                                        read_options=read_options)
  scores, labels = [], []
  for batch in dataset:
    score, label, valid = jax.device_get(eval_step(params, sharding.global_batch(
        batch, mesh, config.mesh.batch_axes)))
    scores.append(score[valid > 0])
    labels.append(label[valid > 0])
  return binary_metrics(np.concatenate(scores), np.concatenate(labels))


class Validation(Hook):
  """Every ``config.eval_every`` steps and at the run's last step: the scores of
  :func:`evaluate`, written as ``eval/...`` and set on the step (``StepEnd.scores``) for the
  checkpoint that follows. :attr:`latest`: the scores of the run's last step, if it had any."""

  def __init__(self, training: Any, data: records.PreparedData, writer: MetricWriter,
               read_options: Any):
    config = training.config
    self.training, self.data, self.writer = training, data, writer
    self.read_options = read_options
    self.eval_step = make_eval_step(
        detectors.window_scorer(training.model_config, detectors.detector_name(config),
                                config.stage, detectors.options_of(config)),
        training.shardings.params, training.mesh, config.mesh.batch_axes)
    self.latest: Dict[str, float] = {}

  def after_step(self, end: StepEnd) -> None:
    self.latest = {}
    if due(end.done, self.training.config.eval_every, end.last):
      scores = evaluate(self.eval_step, end.state.params, self.data, self.training.config,
                        self.training.model_config, self.training.mesh, self.read_options)
      self.writer.write(end.done, scores, prefix="eval")
      self.latest = end.scores = {f"eval/{k}": v for k, v in scores.items()}


def make_reconstruct(model: nn.Module, model_config: ModelConfig, param_shardings: Any,
                     mesh: Any, batch_axes: Sequence[str]
                     ) -> Callable[[Any, Mapping[str, Any]], Dict[str, np.ndarray]]:
  """(params, global pretraining batch) -> reconstruction images of the batch's first sample
  (input / masked / last decoder head's output), for the metric writer."""
  def forward(params, batch):
    video = unit_video(batch["video"][:1], jnp.float32)
    ids_v, ids_a = batch["ids_keep_video"][:1], batch["ids_keep_audio"][:1]
    out = model.apply({"params": params}, video, batch["audio"][:1], ids_v, ids_a,
                      deterministic=True)
    return (video[0], batch["audio"][0], ids_v[0], ids_a[0], out["video_recon"][-1][0],
            out["audio_recon"][-1][0])

  jitted = jax.jit(forward, in_shardings=(param_shardings,
                                          sharding.batch_sharding(mesh, batch_axes)),
                   out_shardings=sharding.replicated(mesh))
  return lambda params, batch: reconstruction_images(
      *[np.asarray(x) for x in jax.device_get(jitted(params, batch))], model_config)


class Images(Hook):
  """Every ``config.image_every`` steps of pretraining: :func:`make_reconstruct`'s images of
  the step's batch."""

  def __init__(self, training: Any, writer: MetricWriter):
    self.every, self.writer = training.config.image_every, writer
    self.reconstruct = make_reconstruct(training.model, training.model_config,
                                        training.shardings.params, training.mesh,
                                        training.config.mesh.batch_axes)

  def after_step(self, end: StepEnd) -> None:
    if end.done % self.every == 0:
      self.writer.write_images(end.done, self.reconstruct(end.state.params, end.batch))
