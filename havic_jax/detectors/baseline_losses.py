"""Training losses and detection scores of two published audio-visual deepfake detectors.

All functions are pure functions of jax arrays with float32 arithmetic, jittable with static
shapes (absent samples or identities are masked, never dropped).

* Intra-/cross-modal consistency (unsupervised, trained on real videos only): a within-video
  audio-video InfoNCE over time windows, a softmax identity loss over per-identity centroids,
  and at test time the sum of an intra-modal score (a low percentile of the window-pair
  similarities of one embedding stream) and a cross-modal score (the mean cosine of aligned
  audio and video windows).
* Voice-face matching (VFD, "Voice-Face Homogeneity Tells Deepfake"): an InfoNCE matching each
  voice to its own face against the faces of other identities, the Real-Fake Contrastive loss,
  and the inference threshold on the voice-face cosine.

The spatially-local inconsistency head of the fine-grained detector lives in
``havic_jax.detectors.local_head``.
"""

from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from havic_jax.detectors.havic_losses import l2_normalise

Array = jax.Array

INITIAL_TEMPERATURE = 0.07  # consistency detector: initial value of the learnable temperature
INTRA_PERCENTILE = 20.0  # consistency detector: percentile of the window-pair similarities
VFD_TEMPERATURE = 0.1  # VFD: temperature of the voice-face InfoNCE
RFC_NUM_FAKES = 10  # VFD: fake pairs Q in each Real-Fake Contrastive softmax
VFD_THRESHOLD = -0.1  # VFD: a voice-face cosine at or above this is judged real

_HIGHEST = jax.lax.Precision.HIGHEST


def paired_cosine(x: Array, y: Array) -> Array:
  """Cosine similarity of matching rows: x, y [..., E] -> [...] float32."""
  x = l2_normalise(jnp.asarray(x, jnp.float32))
  y = l2_normalise(jnp.asarray(y, jnp.float32))
  return jnp.sum(x * y, axis=-1)


def _cosine_matrix(x: Array, y: Array) -> Array:
  """All-pairs cosine similarity: x [..., N, E], y [..., M, E] -> [..., N, M] float32."""
  x = l2_normalise(jnp.asarray(x, jnp.float32))
  y = l2_normalise(jnp.asarray(y, jnp.float32))
  return jnp.einsum("...ne,...me->...nm", x, y, precision=_HIGHEST)


# --------------------------------------------------------------------------------------------
# Intra-/cross-modal consistency
# --------------------------------------------------------------------------------------------
def window_infonce(audio: Array, video: Array,
                   log_temperature: Array = math.log(INITIAL_TEMPERATURE)
                   ) -> Tuple[Array, Array]:
  """Within-video audio-video InfoNCE over time windows.

  audio, video: [B, T, E] per-window embeddings (L2-normalised here); log_temperature: scalar
  log τ (a learnable parameter initialised at log ``INITIAL_TEMPERATURE``). For each video b,
  ``logits[t, t'] = cos(audio[b, t], video[b, t']) / τ``; the positive of window t is the same
  window t' = t of the other modality, the negatives are the other windows of the same video
  (other videos do not enter). Cross-entropy over rows (audio -> video) and over columns
  (video -> audio), each averaged over b and t, then the two averaged.
  Returns (loss, accuracy): accuracy is the share of rows and columns whose argmax is the
  diagonal, both directions averaged.
  """
  temperature = jnp.exp(jnp.asarray(log_temperature, jnp.float32))
  logits = _cosine_matrix(audio, video) / temperature  # [B, T, T]
  positive = jnp.diagonal(logits, axis1=1, axis2=2)  # [B, T]
  windows = jnp.arange(logits.shape[-1])

  def one_direction(axis: int) -> Tuple[Array, Array]:
    loss = jnp.mean(jax.nn.logsumexp(logits, axis=axis) - positive)
    hits = jnp.argmax(logits, axis=axis) == windows
    return loss, jnp.mean(hits.astype(jnp.float32))

  loss_av, acc_av = one_direction(2)
  loss_va, acc_va = one_direction(1)
  return (loss_av + loss_va) / 2.0, (acc_av + acc_va) / 2.0


def identity_softmax_loss(embeddings: Array, identity: Array,
                          log_temperature: Array = math.log(INITIAL_TEMPERATURE), *,
                          num_identities: int) -> Tuple[Array, Array]:
  """Softmax identity loss over the per-identity centroids of the batch (GE2E style).

  embeddings: [N, E] clip embeddings of one modality (L2-normalised here); identity: [N] int
  in [0, num_identities) (a batch holds several identities, each with clips from different
  source videos); log_temperature: scalar log τ; num_identities: static size of the identity
  range. The centroid of identity i is the mean of its normalised embeddings in the batch; for
  a sample's own identity the sample itself is left out of the mean (the sample itself is the
  centroid when it is its identity's only one). ``logits[n, i] = cos(e_n, c_i) / τ`` over the
  identities present in the batch (absent ones are masked out of the softmax); cross-entropy
  against the sample's identity, averaged over n.
  Returns (loss, accuracy of the argmax identity).
  """
  e = l2_normalise(jnp.asarray(embeddings, jnp.float32))
  temperature = jnp.exp(jnp.asarray(log_temperature, jnp.float32))
  one_hot = jax.nn.one_hot(identity, num_identities, dtype=jnp.float32)  # [N, K]
  sums = jnp.matmul(one_hot.T, e, precision=_HIGHEST)  # [K, E]
  counts = jnp.sum(one_hot, axis=0)  # [K]
  present = counts > 0
  # Absent identities get a placeholder centroid (masked below) so no zero vector is normalised.
  centroids = jnp.where(present[:, None], sums / jnp.maximum(counts, 1.0)[:, None], 1.0)
  own_count = counts[identity] - 1.0  # [N]
  own_centroid = jnp.where((own_count > 0)[:, None],
                           (sums[identity] - e) / jnp.maximum(own_count, 1.0)[:, None], e)
  other = jnp.matmul(e, l2_normalise(centroids).T, precision=_HIGHEST)  # [N, K]
  own = jnp.sum(e * l2_normalise(own_centroid), axis=-1)  # [N]
  logits = jnp.where(one_hot > 0, own[:, None], other) / temperature
  logits = jnp.where(present, logits, -jnp.inf)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - own / temperature)
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == identity).astype(jnp.float32))
  return loss, accuracy


def cross_modal_consistency(audio: Array, video: Array) -> Array:
  """Mean over windows of the cosine of aligned audio and video windows.

  audio, video: [B, T, E] -> [B] (higher = better synchronised).
  """
  return jnp.mean(paired_cosine(audio, video), axis=1)


def intra_modal_consistency(embeddings: Array, percentile: float = INTRA_PERCENTILE) -> Array:
  """Low percentile of the window-pair cosine similarities of one embedding stream.

  embeddings: [B, T, E] per-window embeddings, T >= 2. The percentile (linear interpolation)
  runs over the T·(T−1)/2 pairs t < t' of each video. Returns [B] (higher = the windows agree,
  e.g. keep one identity throughout).
  """
  similarity = _cosine_matrix(embeddings, embeddings)  # [B, T, T]
  rows, cols = np.triu_indices(similarity.shape[-1], k=1)
  return jnp.percentile(similarity[:, rows, cols], percentile, axis=1, method="linear")


def consistency_score(intra_embeddings: Array, audio: Array, video: Array,
                      percentile: float = INTRA_PERCENTILE) -> Array:
  """Intra-modal plus cross-modal consistency, [B]; higher = more consistent = more likely real.

  intra_embeddings: [B, T', E'] windows of the stream whose self-consistency is scored (e.g.
  identity embeddings of the face); audio, video: [B, T, E] aligned windows.
  """
  return (intra_modal_consistency(intra_embeddings, percentile)
          + cross_modal_consistency(audio, video))


# --------------------------------------------------------------------------------------------
# Voice-face matching (VFD)
# --------------------------------------------------------------------------------------------
def voice_face_infonce(voice: Array, face: Array, identity: Array,
                       temperature: float = VFD_TEMPERATURE) -> Tuple[Array, Array]:
  """Voice-to-face InfoNCE with same-identity faces excluded.

  voice, face: [N, E] embeddings of the N samples (L2-normalised here); identity: [N] int.
  ``logits[n, m] = cos(voice_n, face_m) / τ``; the positive of voice n is face n; the faces of
  other identities are the negatives; faces m ≠ n of the same identity are masked out.
  Cross-entropy averaged over n. Returns (loss, accuracy of argmax m = n over the kept faces).
  """
  logits = _cosine_matrix(voice, face) / temperature  # [N, N]
  identity = jnp.asarray(identity)
  samples = jnp.arange(logits.shape[0])
  keep = (identity[:, None] != identity[None, :]) | (samples[:, None] == samples[None, :])
  logits = jnp.where(keep, logits, -jnp.inf)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))
  accuracy = jnp.mean((jnp.argmax(logits, axis=1) == samples).astype(jnp.float32))
  return loss, accuracy


def real_fake_contrastive(voice: Array, face: Array, is_fake: Array,
                          num_fakes: int = RFC_NUM_FAKES) -> Array:
  """Real-Fake Contrastive loss: each real pair against the first Q fake pairs of the batch.

  voice, face: [N, E]; is_fake: [N] bool or {0, 1}. With ``s_n = cos(voice_n, face_n)`` (no
  temperature), each real sample r gets the cross-entropy of a softmax over
  ``[s_r, s_f for the first Q = num_fakes fakes f in batch order]`` with s_r as the target;
  averaged over the real samples. Returns a scalar; 0 when the batch has no real or no fake
  sample.
  """
  similarity = paired_cosine(voice, face)  # [N]
  fake = jnp.asarray(is_fake).astype(bool)
  chosen = fake & (jnp.cumsum(fake) <= num_fakes)
  fake_logits = jnp.where(chosen, similarity, -jnp.inf)  # [N]
  negatives = jax.nn.logsumexp(fake_logits)  # -inf without fakes
  per_real = jnp.logaddexp(similarity, negatives) - similarity  # [N]
  real = (~fake).astype(jnp.float32)
  return jnp.sum(per_real * real) / jnp.maximum(jnp.sum(real), 1.0)


def vfd_fake_logit(cosine: Array) -> Array:
  """``VFD_THRESHOLD − cosine`` of voice-face cosines [...]: positive = judged fake."""
  return VFD_THRESHOLD - jnp.asarray(cosine, jnp.float32)
