"""Pretraining decoders: hierarchical reconstruction (MAE) and cross-modal semantic (spec §7)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.encoders import audio_position_table, transformer_block_cls

Array = jax.Array
MASK_TOKEN_STD = 0.02


def truncated_mask_token_init(key, shape, dtype=jnp.float32):
  """Normal(0, 0.02) truncated to [-0.02, 0.02], the video mask-token init."""
  return MASK_TOKEN_STD * jax.random.truncated_normal(key, -1.0, 1.0, shape, dtype)


def hierarchical_schedule(tap_layers: Sequence[int]) -> tuple[tuple[int, ...], ...]:
  """Encoder layers feeding each decoder block: block b uses the taps from the deepest
  downwards, starting b places in. (3, 6, 9, 12) -> ((12, 9, 6, 3), (9, 6, 3), (6, 3), (3,))."""
  deepest_first = tuple(sorted(tap_layers, reverse=True))
  return tuple(deepest_first[b:] for b in range(len(deepest_first)))


class ReconstructionDecoder(nn.Module):
  """Hierarchical MAE decoder for one modality (spec §7).

  Args to ``__call__``:
    visible: [B, K, D] interaction-aware visible patch tokens.
    encoder_taps: per tap layer (ascending), the masked encoder's visible patch tokens [B, K, D].
    ids_keep: [B, K] positions of the visible tokens.
  Returns: one reconstruction per decoder block, each [B, N, patch_dim].
  """

  model_config: ModelConfig
  modality: str  # "video" | "audio"

  @nn.compact
  def __call__(self, visible: Array, encoder_taps: Sequence[Array], ids_keep: Array,
               deterministic: bool = True) -> tuple[Array, ...]:
    model_config = self.model_config
    width, dtype = model_config.decoder_width, model_config.compute_dtype
    is_video = self.modality == "video"
    num_tokens = model_config.video_tokens if is_video else model_config.audio_tokens
    patch_dim = model_config.video_patch_dim if is_video else model_config.audio_patch_dim

    x = layers.dense(width, (layers.EMBED, None), use_bias=False, dtype=dtype,
                     name="embed")(visible)
    mask_init = truncated_mask_token_init if is_video else nn.initializers.zeros
    mask_token = layers.vector_param(self, "mask_token", (width,), mask_init, (layers.EMBED,))
    x = layers.scatter_tokens(x, ids_keep, mask_token, num_tokens)
    if is_video:
      table = layers.sincos_1d(np.arange(num_tokens), width)
    else:
      table = audio_position_table(model_config, width)
      x = x + layers.vector_param(self, "modality", (width,),
                                  nn.initializers.normal(layers.MODALITY_INIT_STD),
                                  (layers.EMBED,)).astype(x.dtype)
    x = x + jnp.asarray(table, x.dtype)

    taps = dict(zip(model_config.tap_layers, encoder_taps))
    units = {
        layer:
            layers.HierarchicalAttention(num_heads=model_config.decoder_heads,
                                         layer_norm_eps=model_config.layer_norm_eps,
                                         dtype=dtype,
                                         attention_impl=model_config.attention_impl,
                                         name=f"hia_{layer}") for layer in model_config.tap_layers
    }
    block_cls = transformer_block_cls(model_config)
    drop_path = (model_config.video_decoder_drop_path if is_video
                 else model_config.audio_decoder_drop_path)
    norm = layers.layer_norm("norm", model_config.layer_norm_eps, dtype)
    outputs = []
    for b, schedule in enumerate(hierarchical_schedule(model_config.tap_layers)):
      for layer in schedule:
        x = units[layer](x, taps[layer])
      x = block_cls(num_heads=model_config.decoder_heads,
                    layer_norm_eps=model_config.layer_norm_eps,
                    mlp_ratio=model_config.mlp_ratio,
                    drop_path_rate=drop_path,
                    qv_bias=True,
                    dtype=dtype,
                    attention_impl=model_config.attention_impl,
                    name=f"block_{b}")(x, deterministic)
      outputs.append(layers.dense(patch_dim, (layers.EMBED, None), dtype=dtype,
                                  name=f"head_{b}")(norm(x)))
    return tuple(outputs)


class CrossModalDecoder(nn.Module):
  """A2V (``source="audio"``) or V2A (``source="video"``) semantic decoder (spec §7).

  visible [B, K, D] interaction-aware source tokens, ids_keep [B, K] -> predicted target-modality
  final-layer tokens [B, N_target, D]. Per segment, a Linear on the token axis maps the source
  segment length to the target segment length.
  """

  model_config: ModelConfig
  source: str  # "audio" | "video"

  @nn.compact
  def __call__(self, visible: Array, ids_keep: Array, deterministic: bool = True) -> Array:
    model_config = self.model_config
    width, dtype = model_config.width, model_config.compute_dtype
    from_audio = self.source == "audio"
    if from_audio:
      num_tokens, target_segment = model_config.audio_tokens, model_config.video_segment_tokens
      mask_token = layers.vector_param(self, "mask_token", (width,), nn.initializers.zeros,
                                       (layers.EMBED,))
    else:
      num_tokens, target_segment = model_config.video_tokens, model_config.audio_segment_tokens
      mask_token = layers.vector_param(self, "mask_token", (width,),
                                       truncated_mask_token_init, (layers.EMBED,))
    x = layers.scatter_tokens(visible, ids_keep, mask_token, num_tokens)
    if from_audio:
      modality = layers.vector_param(self, "modality", (width,),
                                     nn.initializers.normal(layers.MODALITY_INIT_STD),
                                     (layers.EMBED,))
      x = x + modality.astype(x.dtype) + jnp.asarray(audio_position_table(model_config, width),
                                                     x.dtype)
    else:
      x = x + jnp.asarray(layers.sincos_1d(np.arange(num_tokens), width), x.dtype)

    batch = x.shape[0]
    x = x.reshape(batch, model_config.num_segments, -1, width).swapaxes(-1, -2)  # [B, T, D, P_src]
    x = layers.dense(target_segment, (None, None), dtype=dtype, name="token_map")(x)
    x = x.swapaxes(-1, -2).reshape(batch, -1, width)  # [B, T·P_tgt, D]
    x = layers.TransformerBlock(num_heads=model_config.cross_decoder_heads,
                                layer_norm_eps=model_config.layer_norm_eps,
                                mlp_ratio=model_config.mlp_ratio,
                                drop_path_rate=0.0,
                                qv_bias=False,
                                dtype=dtype,
                                attention_impl=model_config.attention_impl,
                                name="block")(x, deterministic)
    return layers.layer_norm("norm", model_config.layer_norm_eps, dtype)(x)
