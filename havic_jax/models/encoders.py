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


def transformer_block_cls(cfg: ModelConfig):
  """The block class, rematerialised when ``cfg.remat`` with the ``jax.checkpoint_policies``
  entry ``cfg.remat_policy`` (``deterministic`` is static)."""
  if cfg.remat:
    return nn.remat(layers.TransformerBlock, static_argnums=(2,),
                    policy=getattr(jax.checkpoint_policies, cfg.remat_policy))
  return layers.TransformerBlock


def encoder_block(cfg: ModelConfig, drop_path_rate: float, name: str) -> nn.Module:
  """One pre-norm encoder block (``transformer_block_cls``) named ``name``."""
  return transformer_block_cls(cfg)(num_heads=cfg.num_heads, layer_norm_eps=cfg.layer_norm_eps,
                                    mlp_ratio=cfg.mlp_ratio, drop_path_rate=drop_path_rate,
                                    qv_bias=True, dtype=cfg.compute_dtype,
                                    attention_impl=cfg.attention_impl, name=name)


class ScannedBlocks(nn.Module):
  """``length`` identical blocks as one ``nn.scan`` over stacked parameters
  (``stacking.SCANNED_BLOCK`` [length, ...]): x [B, N, D] -> [B, N, D]."""

  cfg: ModelConfig
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
    block = encoder_block(self.cfg, self.drop_path_rate, stacking.SCANNED_BLOCK)
    return scan(block, x, None)[0]


def run_trunk(module: nn.Module, x: Array, cfg: ModelConfig, drop_path_rate: float,
              deterministic: bool) -> tuple[Array, ...]:
  """Runs ``cfg.depth`` pre-norm blocks as children of ``module`` and returns ``norm(x)``
  after each tap layer, all through one shared final LayerNorm. The blocks are ``block_i``,
  or with ``cfg.scan_layers`` one scanned group ``blocks_a_b`` per span between taps
  (``stacking``)."""
  norm = layers.layer_norm("norm", cfg.layer_norm_eps, cfg.compute_dtype)
  taps = []
  for first, end in stacking.layer_groups(cfg.depth, cfg.tap_layers):
    if cfg.scan_layers:
      x = ScannedBlocks(cfg, drop_path_rate, end - first, deterministic,
                        name=stacking.group_name(first, end))(x)
    else:
      for i in range(first, end):
        x = encoder_block(cfg, drop_path_rate, f"block_{i}")(x, deterministic)
    if end in cfg.tap_layers:
      taps.append(norm(x))
  return tuple(taps)


def add_segment_tokens(module: nn.Module, patches: Array, cfg: ModelConfig,
                       position: Optional[np.ndarray]) -> Array:
  """Prepends one learnable segment token (plus ``position`` [T, D] if given) to each of the
  ``cfg.num_segments`` segments of ``patches`` [B, T·P, D] -> [B, T·(1+P), D]."""
  width = patches.shape[-1]
  tokens = layers.vector_param(module, "segment_tokens", (cfg.num_segments, width),
                               nn.initializers.normal(layers.SEGMENT_TOKEN_INIT_STD),
                               (None, layers.EMBED))
  if position is not None:
    tokens = tokens + jnp.asarray(position)
  tokens = jnp.broadcast_to(tokens, (patches.shape[0],) + tokens.shape)
  return layers.insert_segment_tokens(tokens, patches, cfg.num_segments)


def embed_patches(patches: Array, position: Array, ids_keep: Optional[Array],
                  cfg: ModelConfig) -> Array:
  """The ``patch_embed`` projection of the kept patches plus their positions: patches
  [B, N, P], position [N, D], kept indices [B, K] (None: all) -> [B, K, D]. Only the kept
  patches are gathered and embedded (the projection is per token)."""
  position = jnp.asarray(position)
  if ids_keep is not None:
    patches = layers.gather_tokens(patches, ids_keep)
    position = jnp.take(position, ids_keep, axis=0)
  x = layers.dense(cfg.width, ("patch", layers.EMBED), dtype=cfg.compute_dtype,
                   name="patch_embed")(patches)
  return x + position.astype(x.dtype)


class VideoEncoder(nn.Module):
  """Tubelet ViT. video [B, F, H, W, 3] in [0, 1] (no normalisation) and optional kept token
  indices [B, K] (grouped by segment) -> taps, each [B, T·(1+K/T), D]."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, video: Array, ids_keep: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, ...]:
    cfg = self.cfg
    x = embed_patches(patchify_video(video, cfg),
                      layers.sincos_1d(np.arange(cfg.video_tokens), cfg.width), ids_keep, cfg)
    segment_position = layers.sincos_1d(np.arange(cfg.num_segments), cfg.width)
    x = add_segment_tokens(self, x, cfg, segment_position)
    return run_trunk(self, x, cfg, cfg.video_drop_path, deterministic)


def audio_position_table(cfg: ModelConfig, width: int) -> np.ndarray:
  """2-D sin-cos table of the audio grid in the configured token order. [N_a, width]."""
  table = layers.sincos_2d(cfg.audio_mel_tokens, cfg.audio_time_tokens, width)
  return table[audio_token_order(cfg)]


class AudioEncoder(nn.Module):
  """Spectrogram ViT. audio [B, time, mel] (normalised fbank) and optional kept indices
  [B, K] -> taps, each [B, T·(1+K/T), D]. Segment tokens carry no position (reference)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, audio: Array, ids_keep: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, ...]:
    cfg = self.cfg
    table = audio_position_table(cfg, cfg.width)
    pos = layers.vector_param(self, "pos_embed", table.shape,
                              lambda *_: jnp.asarray(table), (None, layers.EMBED))
    modality = layers.vector_param(self, "modality", (cfg.width,),
                                   nn.initializers.normal(layers.MODALITY_INIT_STD),
                                   (layers.EMBED,))
    x = embed_patches(patchify_audio(audio, cfg), pos + modality, ids_keep, cfg)
    x = add_segment_tokens(self, x, cfg, None)
    return run_trunk(self, x, cfg, cfg.audio_drop_path, deterministic)
