"""Voice–face matching detector (VFD).

Paper: "Voice-Face Homogeneity Tells Deepfake". A voice stream (the clip's fbank, 3.2 s here
against the paper's 3 s) and a face stream (one face frame) on the shared encoders, each
pooled and projected into one embedding space.

- Pretraining on real videos with identities: an identity classifier on each stream plus an
  InfoNCE whose positive is a face of the voice's identity (its own clip's frame) and whose
  negatives are faces of other identities (τ = 0.1).
- Fine-tuning with the Real-Fake Contrastive loss on labelled clips.
- Inference: real if cos(voice, face) ≥ −0.1; the eval binary's fake logit is −0.1 − cos, so
  its 0.5 threshold is the paper's and AUC uses the raw cosine.

The face stream is the video encoder on one frame repeated over a tubelet (``num_frames`` =
``tubelet_size``, one segment): its own parameters, ``face_encoder``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from havic_jax.detectors import baseline_losses, encoder_features
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.encoders import AudioEncoder, VideoEncoder
from havic_jax.models.inputs import unit_video

Array = jax.Array


def face_config(model_config: ModelConfig) -> ModelConfig:
  """The face stream's encoder sizes: one tubelet of ``tubelet_size`` frames, one segment."""
  return dataclasses.replace(model_config, num_frames=model_config.tubelet_size, num_segments=1)


def face_input(video: Array, frame: Array, model_config: ModelConfig) -> Array:
  """video [B, F, H, W, 3] and frame indices [B] -> [B, tubelet_size, H, W, 3], the chosen
  frame repeated."""
  face = jnp.take_along_axis(video, frame[:, None, None, None, None], axis=1)
  return jnp.repeat(face, model_config.tubelet_size, axis=1)


class VoiceFaceModel(nn.Module):
  """video [B, F, H, W, 3] in [0, 1], audio [B, time, mel] and the face frame index [B]
  (default: the middle frame) -> ``voice``, ``face`` embeddings [B, embed_dim] and identity
  logits ``voice_identity`` / ``face_identity`` [B, num_identities]."""

  model_config: ModelConfig
  embed_dim: int
  num_identities: int

  @nn.compact
  def __call__(self, video: Array, audio: Array, deterministic: bool = True,
               face_frame: Optional[Array] = None) -> Dict[str, Array]:
    model_config, face_model_config = self.model_config, face_config(self.model_config)
    if face_frame is None:
      face_frame = jnp.full((video.shape[0],), video.shape[1] // 2, jnp.int32)
    voice = encoder_features.pooled(encoder_features.final_patches(
        AudioEncoder(model_config, name="audio_encoder")(audio, None, deterministic), model_config))
    face = encoder_features.pooled(
        encoder_features.final_patches(
            VideoEncoder(face_model_config,
                         name="face_encoder")(face_input(video, face_frame, model_config), None,
                                              deterministic), face_model_config))
    dense = lambda width, name: layers.dense(width, (layers.EMBED, None),
                                             dtype=model_config.compute_dtype, name=name)
    return {"voice": dense(self.embed_dim, "voice_proj")(voice),
            "face": dense(self.embed_dim, "face_proj")(face),
            "voice_identity": dense(self.num_identities, "voice_identity_head")(voice),
            "face_identity": dense(self.num_identities, "face_identity_head")(face)}


def build_model(model_config: ModelConfig, stage: str, options: Any) -> nn.Module:
  """The voice–face model, the same in both stages; ``options``: ``embed_dim`` (width of the
  voice–face space), ``num_identities`` (identity classes of the pretraining heads)."""
  del stage
  if options.num_identities < 1:
    raise ValueError("detector.num_identities must be set (the training data's identity count;"
                     " the training loop fills it in from the prepared data)")
  return VoiceFaceModel(model_config, options.embed_dim, options.num_identities)


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any):
  """Pretraining: identity cross-entropies + voice–face InfoNCE (batch ``identity`` [B]);
  fine-tuning: Real-Fake Contrastive (batch ``overall_label`` [B]). The face frame is drawn
  per sample from the step key."""
  pretraining = config.stage == "pretrain"

  def compute(params, batch, key):
    frame_key, dropout_key = jax.random.split(key)
    video = unit_video(batch["video"], model_config.compute_dtype)
    frame = jax.random.randint(frame_key, (video.shape[0],), 0, video.shape[1])
    out = model.apply({"params": params}, video, batch["audio"], deterministic=False,
                      face_frame=frame, rngs={"dropout": dropout_key})
    if not pretraining:
      total = baseline_losses.real_fake_contrastive(out["voice"], out["face"],
                                                    batch["overall_label"])
      return total, {"total": total, "rfc": total}
    identity = batch["identity"]
    ce = lambda logits: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits, jnp.float32), identity))
    voice_ce, face_ce = ce(out["voice_identity"]), ce(out["face_identity"])
    nce, nce_acc = baseline_losses.voice_face_infonce(out["voice"], out["face"], identity)
    total = voice_ce + face_ce + nce
    return total, {"total": total, "voice_identity_ce": voice_ce, "face_identity_ce": face_ce,
                   "voice_face_nce": nce, "voice_face_acc": nce_acc}
  return compute


def window_outputs(model: nn.Module, params: Any, video: Array, audio: Array
                   ) -> Dict[str, Array]:
  """Fake logit ``overall`` [B] = −0.1 − cos(voice, face) on the window's middle frame."""
  out = model.apply({"params": params}, unit_video(video, model.model_config.compute_dtype), audio)
  return {
      "overall":
          baseline_losses.vfd_fake_logit(baseline_losses.paired_cosine(out["voice"], out["face"]))
  }
