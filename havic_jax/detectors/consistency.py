"""Intra- and cross-modal consistency detector (unsupervised: trained on real videos only).

Paper: "Unsupervised Multimodal Deepfake Detection Using Intra- and Cross-Modal
Inconsistencies". On the shared encoders:

- cross-modal: per-window audio and video embeddings, trained with a within-video InfoNCE
  (positive: the same time window; negatives: the video's other windows) with a learnable
  temperature starting at 0.07; score = mean diagonal cosine;
- intra-modal: identity embeddings of short video windows, trained with a softmax over the
  identities of the batch (batches of I identities × several clips from different source
  videos); score = 20th percentile of the window-pair similarity matrix.

Windows are the clip's ``num_segments`` time steps (0.4 s at the spec's 16 frames per 3.2 s),
the finest time step both encoders resolve. Video score = intra + cross (higher = more
consistent = real); the eval binary's fake logit is its negative.
"""

from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.detectors import baseline_losses, encoder_features
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video

Array = jax.Array


class ConsistencyModel(nn.Module):
  """video [B, F, H, W, 3] in [0, 1], audio [B, time, mel] -> per-window embeddings
  ``audio``, ``video`` (cross-modal space) and ``identity`` (intra-modal space), each
  [B, T, embed_dim], and the two learnable log-temperatures."""

  model_config: ModelConfig
  embed_dim: int

  @nn.compact
  def __call__(self, video: Array, audio: Array, deterministic: bool = True) -> Dict[str, Any]:
    model_config, t = self.model_config, self.model_config.num_segments
    video_patches, audio_patches = encoder_features.encoded_patches(model_config, video, audio,
                                                                    deterministic)
    video_steps = encoder_features.video_time_features(video_patches, model_config, t)
    audio_steps = encoder_features.audio_time_features(audio_patches, model_config, t)
    project = lambda name: layers.dense(self.embed_dim, (layers.EMBED, None),
                                        dtype=model_config.compute_dtype, name=name)
    log_tau = lambda name: self.param(name, nn.initializers.constant(
        np.log(baseline_losses.INITIAL_TEMPERATURE)), ())
    return {"audio": project("audio_proj")(audio_steps),
            "video": project("video_proj")(video_steps),
            "identity": project("identity_proj")(video_steps),
            "log_temperature": log_tau("log_temperature"),
            "identity_log_temperature": log_tau("identity_log_temperature")}


def build_model(model_config: ModelConfig, stage: str, options: Any) -> nn.Module:
  """The consistency model (one for its only stage); ``options.embed_dim``: width of both
  embedding spaces."""
  del stage
  return ConsistencyModel(model_config, options.embed_dim)


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any):
  """Window InfoNCE + identity softmax on a batch of real clips with ``identity`` [B] ids."""
  def compute(params, batch, key):
    out = encoder_features.training_outputs(model, params, batch, key)
    cross, cross_acc = baseline_losses.window_infonce(out["audio"], out["video"],
                                                      out["log_temperature"])
    b, t, e = out["identity"].shape
    identity, identity_acc = baseline_losses.identity_softmax_loss(
        out["identity"].reshape(b * t, e), jnp.repeat(batch_identity_slots(batch["identity"]), t),
        out["identity_log_temperature"], num_identities=b)
    total = cross + identity
    return total, {"total": total, "cross_modal_nce": cross, "cross_modal_acc": cross_acc,
                   "identity_nce": identity, "identity_acc": identity_acc,
                   "temperature": jnp.exp(out["log_temperature"])}
  return compute


def batch_identity_slots(identity: Array) -> Array:
  """[B] identity ids (any integers) -> [B] ids in [0, B): each sample's identity as the batch
  position of its first occurrence, so the identity softmax has a static size."""
  same = identity[:, None] == identity[None, :]
  return jnp.argmax(same, axis=1).astype(jnp.int32)


def window_outputs(model: nn.Module, params: Any, video: Array, audio: Array
                   ) -> Dict[str, Array]:
  """Fake logit ``overall`` [B] = −(intra + cross) and per-window ``coherence`` [B, T]."""
  out = model.apply({"params": params}, unit_video(video, model.model_config.compute_dtype), audio)
  score = baseline_losses.consistency_score(out["identity"], out["audio"], out["video"])
  return {"overall": -score, "coherence": baseline_losses.paired_cosine(out["audio"], out["video"])}
