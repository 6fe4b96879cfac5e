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

from havic_jax.detectors import features, losses
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video

Array = jax.Array


class ConsistencyModel(nn.Module):
  """video [B, F, H, W, 3] in [0, 1], audio [B, time, mel] -> per-window embeddings
  ``audio``, ``video`` (cross-modal space) and ``identity`` (intra-modal space), each
  [B, T, embed_dim], and the two learnable log-temperatures."""

  cfg: ModelConfig
  embed_dim: int

  @nn.compact
  def __call__(self, video: Array, audio: Array, deterministic: bool = True) -> Dict[str, Any]:
    cfg, t = self.cfg, self.cfg.num_segments
    video_patches, audio_patches = features.encoded_patches(cfg, video, audio, deterministic)
    video_steps = features.video_time_features(video_patches, cfg, t)
    audio_steps = features.audio_time_features(audio_patches, cfg, t)
    project = lambda name: layers.dense(self.embed_dim, (layers.EMBED, None),
                                        dtype=cfg.compute_dtype, name=name)
    log_tau = lambda name: self.param(name, nn.initializers.constant(
        np.log(losses.INITIAL_TEMPERATURE)), ())
    return {"audio": project("audio_proj")(audio_steps),
            "video": project("video_proj")(video_steps),
            "identity": project("identity_proj")(video_steps),
            "log_temperature": log_tau("log_temperature"),
            "identity_log_temperature": log_tau("identity_log_temperature")}


def build_model(cfg: ModelConfig, stage: str, options: Any) -> nn.Module:
  """The consistency model (one for its only stage); ``options.embed_dim``: width of both
  embedding spaces."""
  del stage
  return ConsistencyModel(cfg, options.embed_dim)


def loss_fn(model: nn.Module, cfg: ModelConfig, config: Any):
  """Window InfoNCE + identity softmax on a batch of real clips with ``identity`` [B] ids."""
  def compute(params, batch, key):
    out = features.training_outputs(model, params, batch, key)
    cross, cross_acc = losses.window_infonce(out["audio"], out["video"], out["log_temperature"])
    b, t, e = out["identity"].shape
    identity, identity_acc = losses.identity_softmax_loss(
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
  out = model.apply({"params": params}, unit_video(video, model.cfg.compute_dtype), audio)
  score = losses.consistency_score(out["identity"], out["audio"], out["video"])
  return {"overall": -score, "coherence": losses.paired_cosine(out["audio"], out["video"])}
