"""The two HAVIC assemblies: the pretraining model and the fine-tuning classifier."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from havic_jax.models import layers
from havic_jax.models.classifier import ClassifierMLP, LayerPool, TokenReducer
from havic_jax.models.config import ModelConfig
from havic_jax.models.decoders import CrossModalDecoder, ReconstructionDecoder
from havic_jax.models.encoders import AudioEncoder, VideoEncoder
from havic_jax.models.interaction import InteractionModule

Array = jax.Array
# Top-level parameter collections initialised from pretraining in the fine-tuning model.
PRETRAINED_MODULES = ("video_encoder", "audio_encoder", "interaction")


class AudioVisualBackbone(nn.Module):
  """Shared trunk of both assemblies: the two encoders and the interaction module."""

  model_config: ModelConfig

  def setup_backbone(self):
    self.video_encoder = VideoEncoder(self.model_config)
    self.audio_encoder = AudioEncoder(self.model_config)
    self.interaction = InteractionModule(self.model_config)

  def encode(self, video: Array, audio: Array, ids_keep_video: Optional[Array],
             ids_keep_audio: Optional[Array], deterministic: bool) -> Tuple[Any, ...]:
    """-> (video taps, audio taps, video interaction output, audio interaction output)."""
    video_taps = self.video_encoder(video, ids_keep_video, deterministic)
    audio_taps = self.audio_encoder(audio, ids_keep_audio, deterministic)
    video_inter, audio_inter = self.interaction(video_taps[-1], audio_taps[-1])
    return video_taps, audio_taps, video_inter, audio_inter


class HAVICPretrain(AudioVisualBackbone):
  """Masked encoders, interaction, reconstruction and cross-modal decoders (spec §2–§7).

  Inputs: video [B, F, H, W, 3] in [0, 1]; audio [B, time, mel] normalised fbank; kept token
  indices ids_keep_video [B, K_v] and ids_keep_audio [B, K_a], grouped by segment.
  Returns a dict of every stage (shapes with T segments, D encoder width):
    video_taps / audio_taps: masked encoder taps, each [B, T·(1+K/T), D];
    video_full_taps / audio_full_taps: unmasked encoder taps (target pass), [B, T·(1+P), D];
    interaction: (video, audio) interaction outputs with segment tokens;
    a2v [B, N_v, D], v2a [B, N_a, D]: cross-modal predictions;
    video_target [B, N_v, D], audio_target [B, N_a, D]: stop-gradient final-layer targets;
    video_recon / audio_recon: one [B, N, patch_dim] per decoder block.
  """

  def setup(self):
    model_config = self.model_config
    self.setup_backbone()
    self.a2v = CrossModalDecoder(model_config, source="audio")
    self.v2a = CrossModalDecoder(model_config, source="video")
    self.video_decoder = ReconstructionDecoder(model_config, modality="video")
    self.audio_decoder = ReconstructionDecoder(model_config, modality="audio")

  def __call__(self, video: Array, audio: Array, ids_keep_video: Array, ids_keep_audio: Array,
               deterministic: bool = True) -> Dict[str, Any]:
    t = self.model_config.num_segments
    patches = lambda x: layers.split_segment_tokens(x, t)[1]
    video_taps, audio_taps, video_inter, audio_inter = self.encode(
        video, audio, ids_keep_video, ids_keep_audio, deterministic)
    a2v = self.a2v(patches(audio_inter), ids_keep_audio, deterministic)
    v2a = self.v2a(patches(video_inter), ids_keep_video, deterministic)

    video_full_taps = self.video_encoder(video, None, deterministic)
    audio_full_taps = self.audio_encoder(audio, None, deterministic)

    video_recon = self.video_decoder(patches(video_inter), [patches(x) for x in video_taps],
                                     ids_keep_video, deterministic)
    audio_recon = self.audio_decoder(patches(audio_inter), [patches(x) for x in audio_taps],
                                     ids_keep_audio, deterministic)
    return {
        "video_taps": video_taps, "audio_taps": audio_taps,
        "video_full_taps": video_full_taps, "audio_full_taps": audio_full_taps,
        "interaction": (video_inter, audio_inter),
        "a2v": a2v, "v2a": v2a,
        "video_target": jax.lax.stop_gradient(patches(video_full_taps[-1])),
        "audio_target": jax.lax.stop_gradient(patches(audio_full_taps[-1])),
        "video_recon": video_recon, "audio_recon": audio_recon,
    }


class HAVICClassifier(AudioVisualBackbone):
  """Fine-tuning model: unmasked encoders, interaction, adaptive aggregation and three heads
  (spec §9). video [B, F, H, W, 3], audio [B, time, mel] -> dict with ``logit``,
  ``audio_logit``, ``video_logit`` [B] and the intermediate stages."""

  def setup(self):
    model_config = self.model_config
    self.setup_backbone()
    dtype = model_config.compute_dtype
    reducer = lambda: TokenReducer(model_config.reducer_hidden, dtype)
    self.video_reducers = [reducer() for _ in model_config.tap_layers]
    self.audio_reducers = [reducer() for _ in model_config.tap_layers]
    self.video_inter_reducer = reducer()
    self.audio_inter_reducer = reducer()
    self.video_pool = LayerPool()
    self.audio_pool = LayerPool()
    head = lambda: ClassifierMLP(model_config.classifier_hidden, model_config.classifier_dropout,
                                 dtype)
    self.classifier = head()
    self.audio_classifier = head()
    self.video_classifier = head()

  def __call__(self, video: Array, audio: Array, deterministic: bool = True) -> Dict[str, Any]:
    t = self.model_config.num_segments
    patches = lambda x: layers.split_segment_tokens(x, t)[1]
    video_taps, audio_taps, video_inter, audio_inter = self.encode(video, audio, None, None,
                                                                   deterministic)
    pool_video = self.video_pool(jnp.stack(
        [r(patches(x)) for r, x in zip(self.video_reducers, video_taps)], axis=1))
    pool_audio = self.audio_pool(jnp.stack(
        [r(patches(x)) for r, x in zip(self.audio_reducers, audio_taps)], axis=1))
    features = jnp.concatenate([pool_audio, pool_video,
                                self.audio_inter_reducer(patches(audio_inter)),
                                self.video_inter_reducer(patches(video_inter))], axis=-1)
    return {
        "video_taps": video_taps, "audio_taps": audio_taps,
        "interaction": (video_inter, audio_inter),
        "pool_video": pool_video, "pool_audio": pool_audio,
        "logit": self.classifier(features, deterministic),
        "audio_logit": self.audio_classifier(pool_audio, deterministic),
        "video_logit": self.video_classifier(pool_video, deterministic),
    }


MODEL_KINDS = ("pretrain", "finetune")


def build_model(model_config: ModelConfig, kind: str) -> nn.Module:
  """The pretraining (``kind="pretrain"``) or fine-tuning (``"finetune"``) model."""
  if kind == "pretrain":
    return HAVICPretrain(model_config)
  if kind == "finetune":
    return HAVICClassifier(model_config)
  raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")


def example_inputs(model_config: ModelConfig, kept_tokens: bool, batch_size: int = 1
                   ) -> tuple[Array, ...]:
  """Zero inputs for ``init`` (positional arguments of ``__call__``): video and audio, and for
  a model that takes kept token indices (``kept_tokens``: HAVIC's pretraining model) one kept
  token per segment (parameter shapes do not depend on how many tokens are kept)."""
  video = jnp.zeros(
      (batch_size, model_config.num_frames, model_config.image_size, model_config.image_size, 3),
      jnp.float32)
  audio = jnp.zeros((batch_size, model_config.audio_frames, model_config.mel_bins), jnp.float32)
  if not kept_tokens:
    return video, audio
  one_per_segment = jnp.zeros((batch_size, model_config.num_segments), jnp.int32)
  return video, audio, one_per_segment, one_per_segment


def abstract_params(model: nn.Module, model_config: ModelConfig, kept_tokens: bool) -> Any:
  """Boxed (logically partitioned) parameter shapes of ``model``, taking
  ``example_inputs(model_config, kept_tokens)``, without allocating anything."""
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), *example_inputs(model_config, kept_tokens)))
  return variables["params"]


def havic_params(model_config: ModelConfig, kind: str) -> Any:
  """:func:`abstract_params` of HAVIC's ``kind`` model (``build_model``; the pretraining model
  takes kept token indices)."""
  return abstract_params(build_model(model_config, kind), model_config, kind == "pretrain")
