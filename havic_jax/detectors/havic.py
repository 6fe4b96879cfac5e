"""The HAVIC detector's training objectives: pretraining (spec §8) and fine-tuning (spec §9).

A loss function maps ``(params, batch, key)`` to ``(loss, metrics)``; the model is HAVIC's
(``havic_jax.models.havic.build_model``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

import flax.linen as nn
import jax

from havic_jax.models import masking
from havic_jax.detectors import havic_losses
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video
from havic_jax.models.patches import patchify_audio, patchify_video

Array = jax.Array
LossFn = Callable[[Any, Mapping[str, Array], Array], Tuple[Array, Dict[str, Array]]]


def pretrain_loss_fn(model: nn.Module, cfg: ModelConfig, config: Any) -> LossFn:
  """Pretraining objective of spec §8 with masks drawn from the step key, or taken from the
  batch (``ids_keep_video`` / ``ids_keep_audio``) when it carries them."""
  pcfg = config.pretrain
  masked_only = pcfg.reconstruction_masked_only
  if masked_only is None:
    masked_only = config.compat == "paper"
  weights = dict(pcfg.loss_weights)

  def loss_fn(params, batch, key):
    mask_key, dropout_key = jax.random.split(key)
    video, audio = unit_video(batch["video"]), batch["audio"]
    if "ids_keep_video" in batch:
      ids_v, ids_a = batch["ids_keep_video"], batch["ids_keep_audio"]
    else:
      ids_v, ids_a = masking.pretraining_masks(mask_key, video.shape[0], cfg,
                                               pcfg.video_mask_ratio, pcfg.audio_mask_ratio)
    out = model.apply({"params": params}, video, audio, ids_v, ids_a, deterministic=False,
                      rngs={"dropout": dropout_key})
    return havic_losses.pretraining_loss(
        out, patchify_video(video, cfg), patchify_audio(audio, cfg), ids_v, ids_a,
        num_segments=cfg.num_segments, weights=weights, temperature=pcfg.temperature,
        masked_only=masked_only)

  return loss_fn


def finetune_loss_fn(model: nn.Module) -> LossFn:
  """The three BCE losses of spec §9 (labels ``overall``, ``audio``, ``visual`` in the batch)."""
  def loss_fn(params, batch, key):
    out = model.apply({"params": params}, unit_video(batch["video"]), batch["audio"],
                      deterministic=False, rngs={"dropout": key})
    return havic_losses.finetune_loss(out, batch)
  return loss_fn
