"""Fine-grained inconsistency detector.

Paper: "Detecting Audio-Visual Deepfakes with Fine-Grained Inconsistencies". On the shared
encoders:

- a spatially-local head (``local_head.LocalInconsistencyHead``): for every position of the
  video token grid, the distance between the audio and that position's features over the clip,
  re-weighted by audio-to-position attention, read by a linear classifier;
- temporally-local pseudo-fakes in the fine-tuning data (``havic_jax.data.pseudo_fakes``, switched on
  by ``config.pseudo_fakes``).

The overall logit adds the local head's logit to a linear head on the pooled audio and video
features; linear audio and video heads give the per-modality logits, trained with the three
binary cross-entropies of the fine-tuning stage (pseudo-fakes set the labels of the modality
they replace).
"""

from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from havic_jax.detectors import encoder_features, havic
from havic_jax.detectors.local_head import LocalInconsistencyHead
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video

Array = jax.Array


class FineGrainedModel(nn.Module):
  """video [B, F, H, W, 3] in [0, 1], audio [B, time, mel] -> ``logit``, ``audio_logit``,
  ``video_logit`` [B] and the local head's ``distance`` / ``attention`` maps [B, G, G]."""

  model_config: ModelConfig

  @nn.compact
  def __call__(self, video: Array, audio: Array, deterministic: bool = True) -> Dict[str, Array]:
    model_config, t = self.model_config, self.model_config.num_segments
    video_patches, audio_patches = encoder_features.encoded_patches(model_config, video, audio,
                                                                    deterministic)
    local = LocalInconsistencyHead(model_config.compute_dtype, name="local_head")(
        encoder_features.audio_time_features(audio_patches, model_config, t),
        encoder_features.video_grid_features(video_patches, model_config, t))
    pool_audio, pool_video = encoder_features.pooled(audio_patches), encoder_features.pooled(
        video_patches)
    linear = lambda name, x: layers.dense(1, (layers.EMBED, None), dtype=model_config.compute_dtype,
                                          name=name)(x)[:, 0]
    global_logit = linear("global_head", jnp.concatenate([pool_audio, pool_video], axis=-1))
    return {"logit": global_logit + local["logit"],
            "audio_logit": linear("audio_head", pool_audio),
            "video_logit": linear("video_head", pool_video),
            "distance": local["distance"], "attention": local["attention"]}


def build_model(model_config: ModelConfig, stage: str, options: Any) -> nn.Module:
  """The fine-grained model (one for its only stage; no options of its own)."""
  del stage, options
  return FineGrainedModel(model_config)


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any):
  """HAVIC's fine-tuning loss: three BCEs (labels ``overall``, ``audio``, ``visual``)."""
  del model_config, config
  return havic.finetune_loss_fn(model)


def window_outputs(model: nn.Module, params: Any, video: Array, audio: Array
                   ) -> Dict[str, Array]:
  """Head logits ``overall``, ``audio``, ``video`` [B]."""
  out = model.apply({"params": params}, unit_video(video, model.model_config.compute_dtype), audio)
  return havic.head_logits(out)
