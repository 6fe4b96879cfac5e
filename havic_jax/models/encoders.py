"""Video and audio ViT encoders with segment tokens and hierarchical taps (spec §2–§4)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.models import layers, stacking
from havic_jax.models.config import ModelConfig
from havic_jax.models.patches import audio_token_order, patchify_audio, patchify_video

Array = jax.Array


def transformer_block_cls(model_config: ModelConfig):
  """The block class, rematerialised when ``model_config.remat`` with the
  ``jax.checkpoint_policies`` entry ``model_config.remat_policy`` (``deterministic`` is
  static)."""
  if model_config.remat:
    return nn.remat(layers.TransformerBlock, static_argnums=(2,),
                    policy=getattr(jax.checkpoint_policies, model_config.remat_policy))
  return layers.TransformerBlock


def encoder_block(model_config: ModelConfig, drop_path_rate: float, name: str) -> nn.Module:
  """One pre-norm encoder block (``transformer_block_cls``) named ``name``."""
  return transformer_block_cls(model_config)(num_heads=model_config.num_heads,
                                             layer_norm_eps=model_config.layer_norm_eps,
                                             mlp_ratio=model_config.mlp_ratio,
                                             drop_path_rate=drop_path_rate,
                                             qv_bias=True,
                                             dtype=model_config.compute_dtype,
                                             attention_impl=model_config.attention_impl,
                                             name=name)


class ScannedBlocks(nn.Module):
  """``length`` identical blocks as one ``nn.scan`` over stacked parameters
  (``stacking.SCANNED_BLOCK`` [length, ...]): x [B, N, D] -> [B, N, D]."""

  model_config: ModelConfig
  drop_path_rate: float
  length: int
  deterministic: bool

  @nn.compact
  def __call__(self, x: Array) -> Array:
    deterministic = self.deterministic

    def body(block, carry, _):
      return block(carry, deterministic), None

    scan = nn.scan(body, variable_axes={"params": 0},
                   split_rngs={"params": True, "dropout": True}, length=self.length,
                   metadata_params={nn.PARTITION_NAME: stacking.LAYER_AXIS})
    block = encoder_block(self.model_config, self.drop_path_rate, stacking.SCANNED_BLOCK)
    return scan(block, x, None)[0]


def run_trunk(module: nn.Module, x: Array, model_config: ModelConfig, drop_path_rate: float,
              deterministic: bool) -> tuple[Array, ...]:
  """Runs ``model_config.depth`` pre-norm blocks as children of ``module`` and returns ``norm(x)``
  after each tap layer, all through one shared final LayerNorm. The blocks are ``block_i``,
  or with ``model_config.scan_layers`` one scanned group ``blocks_a_b`` per span between taps
  (``stacking``)."""
  norm = layers.layer_norm("norm", model_config.layer_norm_eps, model_config.compute_dtype)
  taps = []
  for first, end in stacking.layer_groups(model_config.depth, model_config.tap_layers):
    if model_config.scan_layers:
      x = ScannedBlocks(model_config, drop_path_rate, end - first, deterministic,
                        name=stacking.group_name(first, end))(x)
    else:
      for i in range(first, end):
        x = encoder_block(model_config, drop_path_rate, f"block_{i}")(x, deterministic)
    if end in model_config.tap_layers:
      taps.append(norm(x))
  return tuple(taps)


def add_segment_tokens(module: nn.Module, patches: Array, model_config: ModelConfig,
                       position: Optional[np.ndarray]) -> Array:
  """Prepends one learnable segment token (plus ``position`` [T, D] if given) to each of the
  ``model_config.num_segments`` segments of ``patches`` [B, T·P, D] -> [B, T·(1+P), D]."""
  width = patches.shape[-1]
  tokens = layers.vector_param(module, "segment_tokens", (model_config.num_segments, width),
                               nn.initializers.normal(layers.SEGMENT_TOKEN_INIT_STD),
                               (None, layers.EMBED))
  if position is not None:
    tokens = tokens + jnp.asarray(position)
  tokens = jnp.broadcast_to(tokens, (patches.shape[0],) + tokens.shape)
  return layers.insert_segment_tokens(tokens, patches, model_config.num_segments)


def embed_patches(patches: Array, position: Array, ids_keep: Optional[Array],
                  model_config: ModelConfig) -> Array:
  """The ``patch_embed`` projection of the kept patches plus their positions: patches
  [B, N, P], position [N, D], kept indices [B, K] (None: all) -> [B, K, D]. Only the kept
  patches are gathered and embedded (the projection is per token)."""
  position = jnp.asarray(position)
  if ids_keep is not None:
    patches = layers.gather_tokens(patches, ids_keep)
    position = jnp.take(position, ids_keep, axis=0)
  x = layers.dense(model_config.width, ("patch", layers.EMBED), dtype=model_config.compute_dtype,
                   name="patch_embed")(patches)
  return x + position.astype(x.dtype)


class VideoEncoder(nn.Module):
  """Tubelet ViT. video [B, F, H, W, 3] in [0, 1] (no normalisation) and optional kept token
  indices [B, K] (grouped by segment) -> taps, each [B, T·(1+K/T), D]."""

  model_config: ModelConfig

  @nn.compact
  def __call__(self, video: Array, ids_keep: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, ...]:
    model_config = self.model_config
    x = embed_patches(patchify_video(video, model_config),
                      layers.sincos_1d(np.arange(model_config.video_tokens), model_config.width),
                      ids_keep, model_config)
    segment_position = layers.sincos_1d(np.arange(model_config.num_segments), model_config.width)
    x = add_segment_tokens(self, x, model_config, segment_position)
    return run_trunk(self, x, model_config, model_config.video_drop_path, deterministic)


def audio_position_table(model_config: ModelConfig, width: int) -> np.ndarray:
  """2-D sin-cos table of the audio grid in the configured token order. [N_a, width]."""
  table = layers.sincos_2d(model_config.audio_mel_tokens, model_config.audio_time_tokens, width)
  return table[audio_token_order(model_config)]


class AudioEncoder(nn.Module):
  """Spectrogram ViT. audio [B, time, mel] (normalised fbank) and optional kept indices
  [B, K] -> taps, each [B, T·(1+K/T), D]. Segment tokens carry no position (reference)."""

  model_config: ModelConfig

  @nn.compact
  def __call__(self, audio: Array, ids_keep: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, ...]:
    model_config = self.model_config
    table = audio_position_table(model_config, model_config.width)
    pos = layers.vector_param(self, "pos_embed", table.shape,
                              lambda *_: jnp.asarray(table), (None, layers.EMBED))
    modality = layers.vector_param(self, "modality", (model_config.width,),
                                   nn.initializers.normal(layers.MODALITY_INIT_STD),
                                   (layers.EMBED,))
    x = embed_patches(patchify_audio(audio, model_config), pos + modality, ids_keep, model_config)
    x = add_segment_tokens(self, x, model_config, None)
    return run_trunk(self, x, model_config, model_config.audio_drop_path, deterministic)
