"""HAVIC losses as pure functions (spec §8, §9). All arithmetic is float32.

Pretraining: hierarchical reconstruction, fine-grained contrastive with soft negatives (on the
global batch: under ``jit`` on a mesh the compiler inserts the gathers), cross-modal semantic.
Fine-tuning: three binary cross-entropies (overall, audio and visual heads).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from havic_jax.models.layers import split_segment_tokens

Array = jax.Array


def _f32(x: Array) -> Array:
  return jnp.asarray(x, jnp.float32)


def l2_normalise(x: Array, eps: float = 1e-12) -> Array:
  """Rows divided by max(‖row‖₂, eps), as torch.nn.functional.normalize."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def masked_token_weights(ids_keep: Array, num_tokens: int) -> Array:
  """[B, K] kept indices -> [B, N] float32: 1 for masked tokens, 0 for visible ones."""
  visible = jax.vmap(lambda ids: jnp.zeros((num_tokens,), jnp.float32).at[ids].set(1.0))(ids_keep)
  return 1.0 - visible


def reconstruction_loss(predictions: Sequence[Array], target: Array,
                        ids_keep: Optional[Array] = None) -> Array:
  """Mean over heads of the per-sample MSE (then batch mean).

  predictions: each [B, N, P] (one per decoder block); target: [B, N, P] patches (raw [0, 1]
  pixels or normalised fbank values; the loss is in squared target units). With ``ids_keep``
  [B, K], only masked tokens count (the paper); otherwise all tokens (the released code).
  """
  target = _f32(target)
  if ids_keep is None:
    weights = jnp.ones(target.shape[:2], jnp.float32)
  else:
    weights = masked_token_weights(ids_keep, target.shape[1])
  per_head = []
  for prediction in predictions:
    token_mse = jnp.mean((_f32(prediction) - target) ** 2, axis=-1)  # [B, N]
    per_sample = jnp.sum(token_mse * weights, axis=1) / jnp.sum(weights, axis=1)
    per_head.append(jnp.mean(per_sample))
  return jnp.mean(jnp.stack(per_head))


def soft_negative_weights(num_segments: int) -> Array:
  """[T, T] weights of same-sample pairs: 1 on the diagonal, elsewhere
  1 − 2σ(−|t − t'|) = tanh(|t − t'|/2) (|Δt| = 1 -> 0.4621, 7 -> 0.9982)."""
  t = jnp.arange(num_segments)
  delta = jnp.abs(t[:, None] - t[None, :]).astype(jnp.float32)
  return jnp.where(delta == 0, 1.0, jnp.tanh(delta / 2.0))


def segment_means(tokens: Array, num_segments: int) -> Array:
  """[B, T·P, D] patch tokens -> [B, T, D] per-segment means."""
  batch, length, dim = tokens.shape
  return jnp.mean(_f32(tokens).reshape(batch, num_segments, length // num_segments, dim), axis=2)


def contrastive_loss(audio: Array, video: Array, temperature: float = 0.07
                     ) -> Tuple[Array, Array]:
  """Fine-grained contrastive loss with soft negatives over the whole (global) batch.

  audio, video: [B, T, D] per-segment embeddings (L2-normalised here). Rows/columns are
  ``b·T + t``; ``s = a·vᵀ/τ``; pairs of the same sample and different segment weigh
  ``tanh(|t − t'|/2)`` in the denominator, all others 1. Per row
  ``−(s_ii − logsumexp_j(s_ij + log w_ij))``, averaged over rows, for ``s`` and ``sᵀ``.
  Returns (loss, accuracy of argmax on the diagonal, both directions averaged).
  """
  batch, num_segments, dim = audio.shape
  a = l2_normalise(_f32(audio).reshape(batch * num_segments, dim))
  v = l2_normalise(_f32(video).reshape(batch * num_segments, dim))
  logits = jnp.matmul(a, v.T, precision=jax.lax.Precision.HIGHEST) / temperature
  same_sample = jnp.eye(batch, dtype=bool)
  log_w = jnp.where(same_sample[:, None, :, None],
                    jnp.log(soft_negative_weights(num_segments))[None, :, None, :], 0.0)
  log_w = log_w.reshape(batch * num_segments, batch * num_segments)
  labels = jnp.arange(batch * num_segments)

  def one_direction(s):
    loss = jnp.mean(jax.nn.logsumexp(s + log_w, axis=1) - jnp.diagonal(s))
    accuracy = jnp.mean((jnp.argmax(s, axis=1) == labels).astype(jnp.float32))
    return loss, accuracy

  loss_av, acc_av = one_direction(logits)
  loss_va, acc_va = one_direction(logits.T)
  return (loss_av + loss_va) / 2.0, (acc_av + acc_va) / 2.0


def cross_modal_loss(prediction: Array, target: Array) -> Array:
  """MSE over all tokens and channels against a stop-gradient target; prediction and target
  [B, N, D] encoder features."""
  return jnp.mean((_f32(prediction) - jax.lax.stop_gradient(_f32(target))) ** 2)


def pretraining_loss(outputs: Mapping[str, Any], video_patches: Array, audio_patches: Array,
                     ids_keep_video: Array, ids_keep_audio: Array, *, num_segments: int,
                     weights: Mapping[str, float], temperature: float = 0.07,
                     masked_only: bool = False) -> Tuple[Array, Dict[str, Array]]:
  """Total pretraining loss ``w_rec·L_rec + w_cl·L_cl + w_cross·L_cross`` and its parts.

  outputs: the dict of ``HAVICPretrain``; video_patches [B, N_v, P_v] and audio_patches
  [B, N_a, P_a]: reconstruction targets; ids_keep_*: the masks (used when ``masked_only``).
  """
  rec_v = reconstruction_loss(outputs["video_recon"], video_patches,
                              ids_keep_video if masked_only else None)
  rec_a = reconstruction_loss(outputs["audio_recon"], audio_patches,
                              ids_keep_audio if masked_only else None)
  final = lambda taps: split_segment_tokens(taps[-1], num_segments)[1]
  nce, accuracy = contrastive_loss(segment_means(final(outputs["audio_taps"]), num_segments),
                                   segment_means(final(outputs["video_taps"]), num_segments),
                                   temperature)
  cross_v = cross_modal_loss(outputs["a2v"], outputs["video_target"])
  cross_a = cross_modal_loss(outputs["v2a"], outputs["audio_target"])
  total = (weights["reconstruction"] * (rec_v + rec_a) + weights["contrastive"] * nce
           + weights["cross_modal"] * (cross_v + cross_a))
  return total, {
      "total": total, "reconstruction": rec_v + rec_a, "cross_modal": cross_v + cross_a,
      "rec_loss_video": rec_v, "rec_loss_audio": rec_a, "nce_loss": nce, "nce_acc": accuracy,
      "cross_loss_video": cross_v, "cross_loss_audio": cross_a,
  }


def binary_cross_entropy(logit: Array, label: Array) -> Array:
  """Mean sigmoid BCE of logits [B] (positive = fake) against labels [B] in {0, 1}."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(_f32(logit), _f32(label)))


def binary_accuracy(logit: Array, label: Array) -> Array:
  """Share of logits [B] on the side of 0 their label [B] says (1 = fake = positive)."""
  return jnp.mean(((logit > 0) == (label > 0.5)).astype(jnp.float32))


def finetune_loss(outputs: Mapping[str, Array], labels: Mapping[str, Array]
                  ) -> Tuple[Array, Dict[str, Array]]:
  """``BCE(logit, overall) + BCE(audio_logit, audio) + BCE(video_logit, visual)``.

  outputs: ``logit``, ``audio_logit``, ``video_logit`` [B]; labels: ``overall_label``,
  ``audio_label``, ``visual_label`` [B] in {0, 1} (1 = fake).
  """
  overall = binary_cross_entropy(outputs["logit"], labels["overall_label"])
  audio = binary_cross_entropy(outputs["audio_logit"], labels["audio_label"])
  visual = binary_cross_entropy(outputs["video_logit"], labels["visual_label"])
  total = overall + audio + visual
  return total, {"total": total, "bce_overall": overall, "bce_audio": audio,
                 "bce_visual": visual,
                 "accuracy": binary_accuracy(outputs["logit"], labels["overall_label"])}
