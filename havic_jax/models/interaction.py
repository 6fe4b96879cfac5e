"""Audio-Visual Interaction Module: one bidirectional cross-attention block (spec §6)."""

from __future__ import annotations

import flax.linen as nn
import jax

from havic_jax.models import layers
from havic_jax.models.config import ModelConfig


class InteractionModule(nn.Module):
  """Cross-attends each stream to the other and returns interaction-aware sequences.

  video [B, T·(1+P_v), D] and audio [B, T·(1+P_a), D] (final-layer tokens with segment tokens
  in place) -> (video', audio') of the same shapes, after the output LayerNorms. Both
  directions read the un-updated inputs; each returns ``input + unit(input)`` (the released
  code's second residual on top of the unit's own).
  """

  model_config: ModelConfig

  @nn.compact
  def __call__(self, video: jax.Array, audio: jax.Array) -> tuple[jax.Array, jax.Array]:
    model_config = self.model_config
    unit = lambda name: layers.CrossAttentionUnit(num_heads=model_config.interaction_heads,
                                                  layer_norm_eps=model_config.layer_norm_eps,
                                                  mlp_ratio=model_config.mlp_ratio,
                                                  dtype=model_config.compute_dtype,
                                                  attention_impl=model_config.attention_impl,
                                                  name=name)
    norm = lambda name: layers.layer_norm(name, model_config.layer_norm_eps, model_config.
                                          compute_dtype)
    video_out = video + unit("video_from_audio")(video, audio)
    audio_out = audio + unit("audio_from_video")(audio, video)
    return norm("video_out_norm")(video_out), norm("audio_out_norm")(audio_out)
