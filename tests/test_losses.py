"""Pretraining and fine-tuning losses (spec §8, §9) against plain NumPy formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from havic_jax.detectors import havic_losses
from havic_jax.models import masking
from havic_jax.models.config import ModelConfig
from havic_jax.models.havic_models import HAVICPretrain

RNG = np.random.default_rng(0)


def randn(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------
def np_reconstruction(predictions, target, ids_keep=None):
  heads = []
  for prediction in predictions:
    per_sample = []
    for b in range(target.shape[0]):
      tokens = range(target.shape[1])
      if ids_keep is not None:
        tokens = [n for n in tokens if n not in set(ids_keep[b].tolist())]
      per_sample.append(np.mean([(prediction[b, n] - target[b, n]) ** 2 for n in tokens]))
    heads.append(np.mean(per_sample))
  return np.mean(heads)


def np_contrastive(audio, video, temperature=0.07):
  batch, segments, _ = audio.shape
  a = audio.reshape(batch * segments, -1).astype(np.float64)
  v = video.reshape(batch * segments, -1).astype(np.float64)
  a /= np.linalg.norm(a, axis=1, keepdims=True)
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  s = a @ v.T / temperature
  n = batch * segments
  w = np.ones((n, n))
  for i in range(n):
    for j in range(n):
      if i // segments == j // segments and i != j:
        w[i, j] = 1.0 - 2.0 / (1.0 + np.exp(abs(i % segments - j % segments)))
  loss, accuracy = 0.0, 0.0
  for logits in (s, s.T):
    for i in range(n):
      loss -= np.log(np.exp(logits[i, i]) / np.sum(w[i] * np.exp(logits[i]))) / (2 * n)
      accuracy += (np.argmax(logits[i]) == i) / (2 * n)
  return loss, accuracy


def np_bce(logit, label):
  p = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
  return np.mean(-(label * np.log(p) + (1 - label) * np.log(1 - p)))


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------
def test_reconstruction_over_all_tokens_matches_numpy():
  predictions, target = [randn(2, 10, 6) for _ in range(4)], randn(2, 10, 6)
  got = havic_losses.reconstruction_loss([jnp.asarray(p) for p in predictions], jnp.asarray(target))
  np.testing.assert_allclose(got, np_reconstruction(predictions, target), rtol=1e-5)


def test_reconstruction_over_masked_tokens_matches_numpy():
  predictions, target = [randn(2, 10, 6) for _ in range(4)], randn(2, 10, 6)
  ids_keep = np.array([[3, 0, 7], [9, 4, 1]], np.int32)
  got = havic_losses.reconstruction_loss([jnp.asarray(p) for p in predictions], jnp.asarray(target),
                                   jnp.asarray(ids_keep))
  want = np_reconstruction(predictions, target, ids_keep)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(want - np_reconstruction(predictions, target)) > 1e-3  # the option matters


def test_reconstruction_is_float32_for_bfloat16_inputs():
  predictions, target = [randn(2, 10, 6)], randn(2, 10, 6)
  got = havic_losses.reconstruction_loss([jnp.asarray(predictions[0], jnp.bfloat16)],
                                   jnp.asarray(target, jnp.bfloat16))
  assert got.dtype == jnp.float32


# --------------------------------------------------------------------------------------------
# Contrastive
# --------------------------------------------------------------------------------------------
def test_soft_negative_weights_golden_values():
  w = np.asarray(havic_losses.soft_negative_weights(8))
  assert w.shape == (8, 8) and w.dtype == np.float32
  np.testing.assert_array_equal(np.diag(w), np.ones(8))
  np.testing.assert_allclose(w, w.T)
  assert round(float(w[0, 1]), 4) == 0.4621 and round(float(w[5, 4]), 4) == 0.4621
  assert round(float(w[0, 7]), 4) == 0.9982
  t = np.arange(8)
  delta = np.abs(t[:, None] - t[None])
  off = delta > 0
  np.testing.assert_allclose(w[off], 1 - 2 / (1 + np.exp(delta[off])), rtol=1e-6)


def test_contrastive_matches_numpy_loops():
  audio, video = randn(3, 8, 16), randn(3, 8, 16)
  loss, accuracy = havic_losses.contrastive_loss(jnp.asarray(audio), jnp.asarray(video))
  want_loss, want_accuracy = np_contrastive(audio, video)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(accuracy, want_accuracy, atol=1e-6)
  loss, _ = havic_losses.contrastive_loss(jnp.asarray(audio), jnp.asarray(video), temperature=0.5)
  np.testing.assert_allclose(loss, np_contrastive(audio, video, 0.5)[0], rtol=1e-5)


def test_aligned_pairs_beat_shuffled_pairs():
  audio = randn(4, 8, 32)
  aligned, accuracy = havic_losses.contrastive_loss(jnp.asarray(audio), jnp.asarray(audio))
  shuffled_video = audio[[1, 2, 3, 0]]  # every row paired with another sample's segment
  shuffled, shuffled_accuracy = havic_losses.contrastive_loss(jnp.asarray(audio),
                                                        jnp.asarray(shuffled_video))
  assert float(aligned) < float(shuffled)
  assert float(accuracy) == 1.0 and float(shuffled_accuracy) == 0.0


def test_segment_means():
  tokens = randn(2, 8 * 5, 4)
  got = havic_losses.segment_means(jnp.asarray(tokens), 8)
  want = np.stack([[tokens[b, 5 * t:5 * t + 5].mean(0) for t in range(8)] for b in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Cross-modal and total
# --------------------------------------------------------------------------------------------
def test_cross_modal_is_plain_mse():
  prediction, target = randn(2, 7, 5), randn(2, 7, 5)
  got = havic_losses.cross_modal_loss(jnp.asarray(prediction, jnp.bfloat16), jnp.asarray(target))
  assert got.dtype == jnp.float32
  want = np.mean((np.asarray(jnp.asarray(prediction, jnp.bfloat16), np.float32) - target) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def fake_outputs(batch=2, segments=8, kept=3, n_v=40, n_a=24, dim=16, pv=12, pa=6):
  taps = lambda: tuple(jnp.asarray(randn(batch, segments * (1 + kept), dim)) for _ in range(4))
  return {
      "video_taps": taps(), "audio_taps": taps(),
      "video_recon": tuple(jnp.asarray(randn(batch, n_v, pv)) for _ in range(4)),
      "audio_recon": tuple(jnp.asarray(randn(batch, n_a, pa)) for _ in range(4)),
      "a2v": jnp.asarray(randn(batch, n_v, dim)), "v2a": jnp.asarray(randn(batch, n_a, dim)),
      "video_target": jnp.asarray(randn(batch, n_v, dim)),
      "audio_target": jnp.asarray(randn(batch, n_a, dim)),
  }


@pytest.mark.parametrize("masked_only", [False, True])
def test_pretraining_loss_is_the_weighted_sum_of_its_parts(masked_only):
  out = fake_outputs()
  video_patches, audio_patches = jnp.asarray(randn(2, 40, 12)), jnp.asarray(randn(2, 24, 6))
  ids_v = jnp.asarray(np.stack([RNG.permutation(40)[:24] for _ in range(2)]), jnp.int32)
  ids_a = jnp.asarray(np.stack([RNG.permutation(24)[:8] for _ in range(2)]), jnp.int32)
  weights = {"reconstruction": 1.0, "contrastive": 0.01, "cross_modal": 0.5}
  total, m = havic_losses.pretraining_loss(out, video_patches, audio_patches, ids_v, ids_a,
                                     num_segments=8, weights=weights, masked_only=masked_only)
  assert set(m) == {"rec_loss_video", "rec_loss_audio", "nce_loss", "nce_acc",
                    "cross_loss_video", "cross_loss_audio", "reconstruction", "cross_modal",
                    "total"}
  np.testing.assert_allclose(
      total, m["reconstruction"] + 0.01 * m["nce_loss"] + 0.5 * m["cross_modal"], rtol=1e-6)
  np.testing.assert_allclose(m["total"], total)
  np.testing.assert_allclose(m["reconstruction"], m["rec_loss_video"] + m["rec_loss_audio"],
                             rtol=1e-6)
  np.testing.assert_allclose(m["cross_modal"], m["cross_loss_video"] + m["cross_loss_audio"],
                             rtol=1e-6)
  # Each part against NumPy.
  keep = lambda ids: np.asarray(ids) if masked_only else None
  np.testing.assert_allclose(m["rec_loss_video"], np_reconstruction(
      [np.asarray(x) for x in out["video_recon"]], np.asarray(video_patches), keep(ids_v)),
      rtol=1e-5)
  np.testing.assert_allclose(m["rec_loss_audio"], np_reconstruction(
      [np.asarray(x) for x in out["audio_recon"]], np.asarray(audio_patches), keep(ids_a)),
      rtol=1e-5)
  # Contrastive inputs: per-segment means of the final-layer patch tokens, segment tokens out.
  means = lambda taps: np.asarray(taps[-1]).reshape(2, 8, 4, 16)[:, :, 1:].mean(axis=2)
  nce, acc = np_contrastive(means(out["audio_taps"]), means(out["video_taps"]))
  np.testing.assert_allclose(m["nce_loss"], nce, rtol=1e-5)
  np.testing.assert_allclose(m["nce_acc"], acc, atol=1e-6)
  np.testing.assert_allclose(m["cross_loss_video"], np.mean(
      (np.asarray(out["a2v"]) - np.asarray(out["video_target"])) ** 2), rtol=1e-5)
  np.testing.assert_allclose(m["cross_loss_audio"], np.mean(
      (np.asarray(out["v2a"]) - np.asarray(out["audio_target"])) ** 2), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# No gradient through the cross-modal targets
# --------------------------------------------------------------------------------------------
TINY = ModelConfig(num_frames=16, image_size=32, patch_size=8, tubelet_size=2,
                   audio_frames=128, mel_bins=32, audio_patch_size=8, width=32, depth=2,
                   num_heads=4, tap_layers=(1, 2), decoder_width=16, decoder_depth=2,
                   decoder_heads=2, interaction_heads=4, cross_decoder_heads=4,
                   reducer_hidden=8, classifier_hidden=(16, 8))


def test_no_gradient_reaches_the_encoders_through_the_targets():
  model = HAVICPretrain(TINY)
  video = jnp.asarray(RNG.uniform(size=(2, 16, 32, 32, 3)), jnp.float32)
  audio = jnp.asarray(randn(2, 128, 32))
  ids_v, ids_a = masking.pretraining_mask_batch(np.random.default_rng(0), 2, TINY, 0.75, 0.75)
  # Random parameters of the right shapes (quicker on CPU than compiling ``init``).
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(1), video, audio, ids_v,
                                   ids_a)["params"])
  params = jax.tree.map(lambda s: jnp.asarray(RNG.normal(0.0, 0.1, s.shape), s.dtype), shapes)

  def forward(params):
    out = model.apply({"params": params}, video, audio, ids_v, ids_a)
    return out["a2v"], out["v2a"], out["video_target"], out["audio_target"]

  def grads(params):
    """Parameter gradients of MSE(a2v, v_target) + MSE(v2a, a_target) (no stop-gradient in
    the loss) split by path: (through the targets only, through the predictions only)."""
    (a2v, v2a, target_v, target_a), pullback = jax.vjp(forward, params)
    mse = jax.grad(lambda p, t: jnp.mean((p - t) ** 2), argnums=(0, 1))
    (d_a2v, d_target_v), (d_v2a, d_target_a) = mse(a2v, target_v), mse(v2a, target_a)
    zero = jnp.zeros_like
    cotangents = ((zero(d_a2v), d_a2v), (zero(d_v2a), d_v2a),
                  (d_target_v, zero(d_target_v)), (d_target_a, zero(d_target_a)))
    return jax.vmap(pullback)(tuple(jnp.stack(c) for c in cotangents))[0]

  # Unoptimised XLA: the gradient program compiles in half the time on a CPU.
  compiled = jax.jit(grads).lower(params).compile(
      {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
  # Every leaf [2, ...]: the gradient through the targets, then through the predictions.
  split = jax.tree.map(np.asarray, compiled(params))
  for leaf in jax.tree.leaves(split):
    np.testing.assert_array_equal(leaf[0], np.zeros_like(leaf[0]))
  for name in ("a2v", "v2a", "video_encoder", "audio_encoder"):
    assert any(np.any(leaf[1] != 0) for leaf in jax.tree.leaves(split[name])), name


def test_cross_modal_loss_stops_the_target_gradient():
  prediction, target = jnp.asarray(randn(2, 7, 5)), jnp.asarray(randn(2, 7, 5))
  d_prediction, d_target = jax.grad(havic_losses.cross_modal_loss, argnums=(0, 1))(prediction,
                                                                                   target)
  np.testing.assert_array_equal(d_target, np.zeros_like(d_target))
  np.testing.assert_allclose(d_prediction, 2 * (prediction - target) / prediction.size,
                             rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
def test_finetune_loss_matches_numpy_bce():
  logits = {k: randn(6) * 3 for k in ("logit", "audio_logit", "video_logit")}
  labels = {k: RNG.integers(0, 2, 6).astype(np.float32)
            for k in ("overall_label", "audio_label", "visual_label")}
  total, m = havic_losses.finetune_loss({k: jnp.asarray(v) for k, v in logits.items()},
                                  {k: jnp.asarray(v) for k, v in labels.items()})
  assert set(m) == {"bce_overall", "bce_audio", "bce_visual", "total", "accuracy"}
  want = {"bce_overall": np_bce(logits["logit"], labels["overall_label"]),
          "bce_audio": np_bce(logits["audio_logit"], labels["audio_label"]),
          "bce_visual": np_bce(logits["video_logit"], labels["visual_label"])}
  for key, value in want.items():
    np.testing.assert_allclose(m[key], value, rtol=1e-5)
  np.testing.assert_allclose(total, sum(want.values()), rtol=1e-5)
  np.testing.assert_allclose(m["total"], total)
  np.testing.assert_allclose(
      m["accuracy"], np.mean((logits["logit"] > 0) == (labels["overall_label"] == 1)))


def test_finetune_loss_is_stable_for_large_logits():
  big = jnp.asarray([100.0, -100.0], jnp.bfloat16)
  outputs = {"logit": big, "audio_logit": big, "video_logit": big}
  right = {k: jnp.asarray([1.0, 0.0]) for k in ("overall_label", "audio_label", "visual_label")}
  total, m = havic_losses.finetune_loss(outputs, right)
  assert total.dtype == jnp.float32 and np.isfinite(total) and float(total) < 1e-6
  wrong = {k: 1.0 - v for k, v in right.items()}
  total, m = havic_losses.finetune_loss(outputs, wrong)
  np.testing.assert_allclose(total, 300.0, rtol=1e-3)
  assert float(m["accuracy"]) == 0.0
