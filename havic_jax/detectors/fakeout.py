"""FakeOut-style detector and its test-time protocol.

Paper: "FakeOut: Leveraging Out-of-domain Self-supervision for Multi-modal Video Deepfake
Detection". Fine-tuning trains an MLP (widths 512 → 128 → 2; the two-way softmax is one logit
here) on the concatenated pooled video and audio features of the shared encoders. At test time
a video's score is the mean over up to ``MAX_CLIPS`` uniformly spaced clips, and the maximum
over its face tracks when several people are on screen (``havic_jax.media.tracking``; the eval
binary does this for ``detector.name = "fakeout"``). Out-of-domain data (clips without faces,
prepared with ``--dataset=folder --crop=centre``) joins the pretraining of the backbone it
starts from through ``config.data.mixture``.
"""

from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.detectors import encoder_features, havic_losses
from havic_jax.models.classifier import ClassifierMLP
from havic_jax.models.config import ModelConfig
from havic_jax.models.inputs import unit_video

Array = jax.Array

MLP_WIDTHS = (512, 128)  # hidden widths of the classifier (then the output logit)
MAX_CLIPS = 9            # test time: clips per video (uniformly spaced)


class FakeOutModel(nn.Module):
  """video [B, F, H, W, 3] in [0, 1], audio [B, time, mel] -> ``logit`` [B] (positive =
  fake)."""

  model_config: ModelConfig
  dropout: float = 0.0

  @nn.compact
  def __call__(self, video: Array, audio: Array, deterministic: bool = True) -> Dict[str, Array]:
    model_config = self.model_config
    video_patches, audio_patches = encoder_features.encoded_patches(model_config, video, audio,
                                                                    deterministic)
    video_features, audio_features = encoder_features.pooled(
        video_patches), encoder_features.pooled(audio_patches)
    mlp = ClassifierMLP(MLP_WIDTHS, (self.dropout,) * len(MLP_WIDTHS), model_config.compute_dtype,
                        name="classifier")
    return {"logit": mlp(jnp.concatenate([video_features, audio_features], axis=-1),
                         deterministic)}


def build_model(model_config: ModelConfig, stage: str, options: Any) -> nn.Module:
  """The FakeOut model (one for its only stage); ``options.dropout``: of the MLP."""
  del stage
  return FakeOutModel(model_config, options.dropout)


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any):
  """Binary cross-entropy of the overall label (the two-way softmax's loss)."""
  def compute(params, batch, key):
    out = encoder_features.training_outputs(model, params, batch, key)
    total = havic_losses.binary_cross_entropy(out["logit"], batch["overall_label"])
    return total, {"total": total, "bce_overall": total,
                   "accuracy": havic_losses.binary_accuracy(out["logit"], batch["overall_label"])}
  return compute


def window_outputs(model: nn.Module, params: Any, video: Array, audio: Array
                   ) -> Dict[str, Array]:
  return {
      "overall":
          model.apply({"params": params}, unit_video(video, model.model_config.compute_dtype),
                      audio)["logit"]
  }


def clip_subset(num_windows: int, max_clips: int = MAX_CLIPS) -> np.ndarray:
  """Indices of up to ``max_clips`` uniformly spaced windows of ``num_windows`` (all when there
  are fewer), first and last included."""
  if num_windows <= max_clips:
    return np.arange(num_windows)
  return np.unique(np.round(np.linspace(0, num_windows - 1, max_clips)).astype(int))


def video_logit(window_logits: np.ndarray, tracks: np.ndarray) -> float:
  """A video's logit: per face track, the mean logit of up to ``MAX_CLIPS`` uniformly spaced
  windows; then the maximum over tracks. window_logits [N], tracks [N] int (track of each
  window, windows of a track in time order)."""
  best = -np.inf
  for track in np.unique(tracks):
    logits = np.asarray(window_logits, np.float64)[tracks == track]
    best = max(best, float(np.mean(logits[clip_subset(len(logits))])))
  return best
