"""HAVIC: hierarchical audio-visual pretraining (spec §2–§8), then a fine-tuned classifier
with overall, audio and video heads (spec §9).

Stage ``pretrain`` trains ``HAVICPretrain`` on masked clips (reconstruction, fine-grained
contrastive and cross-modal losses); stage ``finetune`` trains ``HAVICClassifier`` with three
binary cross-entropies. A window's scores are the classifier's three head logits and the
per-segment audio-visual coherence of the contrastive space; a pretraining checkpoint scores
coherence only (:func:`encoder_coherence`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from havic_jax.detectors import baseline_losses, encoder_features, havic_losses
from havic_jax.models import havic_models
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video
from havic_jax.models.patches import patchify_audio, patchify_video

Array = jax.Array
# Window score name -> the classifier's output holding its logit.
HEADS = {"overall": "logit", "audio": "audio_logit", "video": "video_logit"}
# The parameters :func:`encoder_coherence` reads.
ENCODERS = ("video_encoder", "audio_encoder")


def build_model(model_config: ModelConfig, stage: str, options: Any = None) -> nn.Module:
  """The pretraining model (``stage="pretrain"``) or the fine-tuning classifier
  (``"finetune"``); HAVIC has no detector options."""
  del options
  return havic_models.build_model(model_config, stage)


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any) -> Callable:
  """The loss ``(params, batch, key) -> (loss, metrics)`` of ``config.stage``."""
  if config.stage == "pretrain":
    return pretrain_loss_fn(model, model_config, config)
  return finetune_loss_fn(model)


def pretrain_loss_fn(model: nn.Module, model_config: ModelConfig, config: Any) -> Callable:
  """Pretraining objective of spec §8 with the batch's masks (``ids_keep_video`` /
  ``ids_keep_audio``, drawn by the input pipeline: ``models.masking``)."""
  pretrain = config.pretrain
  masked_only = pretrain.reconstruction_masked_only
  if masked_only is None:
    masked_only = config.compat == "paper"
  weights = dict(pretrain.loss_weights)

  def compute(params, batch, key):
    video, audio = batch["video"], batch["audio"]
    ids_v, ids_a = batch["ids_keep_video"], batch["ids_keep_audio"]
    out = model.apply({"params": params},
                      unit_video(video, model_config.compute_dtype),
                      audio,
                      ids_v,
                      ids_a,
                      deterministic=False,
                      rngs={"dropout": key})
    # The reconstruction targets stay float32 whatever the compute dtype.
    return havic_losses.pretraining_loss(out,
                                         patchify_video(unit_video(video, jnp.float32),
                                                        model_config),
                                         patchify_audio(audio, model_config),
                                         ids_v,
                                         ids_a,
                                         num_segments=model_config.num_segments,
                                         weights=weights,
                                         temperature=pretrain.temperature,
                                         masked_only=masked_only)

  return compute


def finetune_loss_fn(model: nn.Module) -> Callable:
  """The three BCEs of spec §9 (labels ``overall``, ``audio``, ``visual`` in the batch)."""
  def compute(params, batch, key):
    return havic_losses.finetune_loss(encoder_features.training_outputs(model, params, batch, key),
                                      batch)
  return compute


def coherence(audio_tokens: Array, video_tokens: Array, num_segments: int) -> Array:
  """Per-segment cosine similarity [B, T] of final-layer encoder outputs audio [B, T·(1+P_a), D]
  and video [B, T·(1+P_v), D] (segment tokens are left out of the segment means)."""
  patches = lambda x: layers.split_segment_tokens(x, num_segments)[1]
  return baseline_losses.paired_cosine(
      havic_losses.segment_means(patches(audio_tokens), num_segments),
      havic_losses.segment_means(patches(video_tokens), num_segments))


def head_logits(outputs: Dict[str, Array]) -> Dict[str, Array]:
  """A classifier's head logits [B] by window score name (``overall``, ``audio``, ``video``)."""
  return {name: outputs[key] for name, key in HEADS.items()}


def window_outputs(model: nn.Module, params: Any, video: Array, audio: Array
                   ) -> Dict[str, Array]:
  """The fine-tuned classifier's head logits ``overall``, ``audio``, ``video`` [B] and the
  per-segment ``coherence`` [B, T] of video uint8 [B, F, H, W, 3] and audio [B, T_a, M]."""
  out = model.apply({"params": params}, unit_video(video, model.model_config.compute_dtype), audio,
                    deterministic=True)
  return dict(head_logits(out), coherence=coherence(out["audio_taps"][-1],
                                                    out["video_taps"][-1],
                                                    model.model_config.num_segments))


def encoder_coherence(model_config: ModelConfig) -> Callable[..., Dict[str, Array]]:
  """``(params with video_encoder and audio_encoder, video uint8 [B, F, H, W, 3], audio
  [B, T_a, M]) -> {"coherence": [B, T]}``: the unmasked encoders alone, so any checkpoint with
  HAVIC's encoders scores, a pretraining one included."""
  model = havic_models.build_model(model_config, "finetune")

  def encode(module, video, audio):
    return (module.audio_encoder(audio, None, True)[-1],
            module.video_encoder(video, None, True)[-1])

  def forward(params, video, audio):
    audio_tokens, video_tokens = model.apply({"params": params},
                                             unit_video(video, model_config.compute_dtype), audio,
                                             method=encode)
    return {"coherence": coherence(audio_tokens, video_tokens, model_config.num_segments)}
  return forward
