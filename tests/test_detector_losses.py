"""Consistency, voice-face and local-inconsistency detectors against loop-based NumPy formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from havic_jax.detectors import baseline_losses, local_head

RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)

# Every test goes through jit (static shapes; also far quicker than op-by-op dispatch).
window_infonce = jax.jit(baseline_losses.window_infonce)
identity_softmax_loss = jax.jit(baseline_losses.identity_softmax_loss,
                                static_argnames="num_identities")
cross_modal_consistency = jax.jit(baseline_losses.cross_modal_consistency)
intra_modal_consistency = jax.jit(baseline_losses.intra_modal_consistency, static_argnums=1)
consistency_score = jax.jit(baseline_losses.consistency_score)
voice_face_infonce = jax.jit(baseline_losses.voice_face_infonce)
real_fake_contrastive = jax.jit(baseline_losses.real_fake_contrastive, static_argnums=3)
vfd_fake_logit = jax.jit(baseline_losses.vfd_fake_logit)


def randn(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# NumPy references (float64, explicit loops)
# --------------------------------------------------------------------------------------------
def np_cos(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def np_cross_entropy(logits, target):
  logits = np.asarray(logits, np.float64)
  return float(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[target])


def np_window_infonce(audio, video, log_temperature):
  batch, windows, _ = audio.shape
  temperature = np.exp(log_temperature)
  loss, accuracy = 0.0, 0.0
  for b in range(batch):
    s = np.array([[np_cos(audio[b, t], video[b, u]) / temperature for u in range(windows)]
                  for t in range(windows)])
    for t in range(windows):
      for row in (s[t, :], s[:, t]):
        loss += np_cross_entropy(row, t) / (2 * batch * windows)
        accuracy += (np.argmax(row) == t) / (2 * batch * windows)
  return loss, accuracy


def np_identity_softmax(embeddings, identity, log_temperature):
  temperature = np.exp(log_temperature)
  e = [x / np.linalg.norm(x) for x in np.asarray(embeddings, np.float64)]
  present = sorted(set(identity.tolist()))
  loss, accuracy = 0.0, 0.0
  for n in range(len(e)):
    logits = []
    for i in present:
      members = [e[m] for m in range(len(e)) if identity[m] == i and m != n]
      if i == identity[n] and not members:
        members = [e[n]]
      logits.append(np_cos(e[n], np.mean(members, axis=0)) / temperature)
    target = present.index(identity[n])
    loss += np_cross_entropy(logits, target) / len(e)
    accuracy += (np.argmax(logits) == target) / len(e)
  return loss, accuracy


def np_cross_modal(audio, video):
  return np.array([np.mean([np_cos(a, v) for a, v in zip(audio[b], video[b])])
                   for b in range(audio.shape[0])])


def np_intra_modal(embeddings, percentile=20.0):
  scores = []
  for clip in embeddings:
    pairs = [np_cos(clip[t], clip[u]) for t in range(len(clip)) for u in range(t + 1, len(clip))]
    scores.append(np.percentile(pairs, percentile))
  return np.array(scores)


def np_voice_face_infonce(voice, face, identity, temperature=0.1):
  n_samples = len(voice)
  loss, accuracy = 0.0, 0.0
  for n in range(n_samples):
    kept = [m for m in range(n_samples) if m == n or identity[m] != identity[n]]
    logits = [np_cos(voice[n], face[m]) / temperature for m in kept]
    loss += np_cross_entropy(logits, kept.index(n)) / n_samples
    accuracy += (kept[int(np.argmax(logits))] == n) / n_samples
  return loss, accuracy


def np_real_fake_contrastive(voice, face, is_fake, num_fakes=10):
  fakes = [f for f in range(len(voice)) if is_fake[f]][:num_fakes]
  reals = [r for r in range(len(voice)) if not is_fake[r]]
  if not fakes or not reals:
    return 0.0
  total = 0.0
  for r in reals:
    logits = [np_cos(voice[r], face[r])] + [np_cos(voice[f], face[f]) for f in fakes]
    total += np_cross_entropy(logits, 0)
  return total / len(reals)


def np_local_head(params, audio, video):
  def dense(p, x):
    return np.asarray(x, np.float64) @ np.asarray(p["kernel"], np.float64) + p["bias"]

  batch, steps, height, width, channels = video.shape
  reduced = channels // 4
  logits = []
  distance, attention = np.zeros((batch, height, width)), np.zeros((batch, height, width))
  for b in range(batch):
    q = dense(params["query"], audio[b])  # [t, C/4]
    scores = np.zeros((height, width))
    for i in range(height):
      for j in range(width):
        k = dense(params["key"], video[b, :, i, j])  # [t, C/4]
        scores[i, j] = np.mean([np.dot(q[t], k[t]) for t in range(steps)]) / np.sqrt(reduced)
        distance[b, i, j] = np.sqrt(np.sum((audio[b].astype(np.float64)
                                            - video[b, :, i, j]) ** 2))
    attention[b] = np.exp(scores - scores.max()) / np.sum(np.exp(scores - scores.max()))
    weighted = (distance[b] * attention[b]).reshape(-1)
    logits.append(dense(params["classifier"], weighted)[0])
  return np.array(logits), distance, attention


# --------------------------------------------------------------------------------------------
# Intra-/cross-modal consistency
# --------------------------------------------------------------------------------------------
def test_window_infonce_matches_numpy():
  audio, video = randn(3, 5, 8), randn(3, 5, 8)
  loss, accuracy = window_infonce(jnp.asarray(audio), jnp.asarray(video), np.log(0.5))
  want_loss, want_accuracy = np_window_infonce(audio, video, np.log(0.5))
  np.testing.assert_allclose(loss, want_loss, **TOL)
  np.testing.assert_allclose(accuracy, want_accuracy, **TOL)


def test_window_infonce_default_temperature_is_initial_value():
  audio, video = randn(2, 4, 8), randn(2, 4, 8)
  loss, _ = window_infonce(jnp.asarray(audio), jnp.asarray(video))
  np.testing.assert_allclose(loss, np_window_infonce(audio, video, np.log(0.07))[0], **TOL)


def test_window_infonce_prefers_aligned_windows():
  video = randn(4, 6, 16)
  aligned, aligned_accuracy = window_infonce(jnp.asarray(video), jnp.asarray(video))
  shuffled, _ = window_infonce(jnp.asarray(video[:, ::-1]), jnp.asarray(video))
  assert aligned_accuracy == 1.0
  assert aligned < shuffled - 1.0


def test_identity_softmax_matches_numpy():
  embeddings = randn(9, 8)
  identity = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0], np.int32)  # identity 2 has a single clip
  loss, accuracy = identity_softmax_loss(jnp.asarray(embeddings), jnp.asarray(identity),
                                                np.log(0.2), num_identities=5)
  want_loss, want_accuracy = np_identity_softmax(embeddings, identity, np.log(0.2))
  np.testing.assert_allclose(loss, want_loss, **TOL)
  np.testing.assert_allclose(accuracy, want_accuracy, **TOL)


def test_identity_softmax_masks_absent_identities():
  embeddings, identity = jnp.asarray(randn(8, 8)), np.array([0, 0, 1, 1, 2, 2, 2, 1], np.int32)
  base = identity_softmax_loss(embeddings, jnp.asarray(identity), num_identities=3)
  spread = identity_softmax_loss(embeddings, jnp.asarray(identity * 7 + 3),
                                        num_identities=40)
  np.testing.assert_allclose(spread, base, **TOL)


def test_cross_and_intra_modal_consistency_match_numpy():
  audio, video, identity = randn(3, 6, 8), randn(3, 6, 8), randn(3, 7, 5)
  np.testing.assert_allclose(cross_modal_consistency(audio, video),
                             np_cross_modal(audio, video), **TOL)
  np.testing.assert_allclose(intra_modal_consistency(identity),
                             np_intra_modal(identity), **TOL)
  np.testing.assert_allclose(intra_modal_consistency(identity, 65.0),
                             np_intra_modal(identity, 65.0), **TOL)
  np.testing.assert_allclose(consistency_score(identity, audio, video),
                             np_intra_modal(identity) + np_cross_modal(audio, video), **TOL)


def test_intra_modal_uses_only_the_upper_triangle():
  x = randn(1, 8, 4)
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  similarity = x[0] @ x[0].T
  want = np.percentile(similarity[np.triu_indices(8, k=1)], 20.0)
  np.testing.assert_allclose(intra_modal_consistency(x)[0], want, **TOL)
  assert abs(want - np.percentile(similarity, 20.0)) > 1e-3  # the diagonal would matter


# --------------------------------------------------------------------------------------------
# Voice-face matching (VFD)
# --------------------------------------------------------------------------------------------
def test_voice_face_infonce_matches_numpy():
  voice, face = randn(8, 6), randn(8, 6)
  identity = np.array([0, 1, 0, 2, 1, 3, 3, 0], np.int32)
  loss, accuracy = voice_face_infonce(voice, face, identity)
  want_loss, want_accuracy = np_voice_face_infonce(voice, face, identity)
  np.testing.assert_allclose(loss, want_loss, **TOL)
  np.testing.assert_allclose(accuracy, want_accuracy, **TOL)


def test_voice_face_infonce_ignores_other_faces_of_the_same_identity():
  # Row n of the logits is the only term that depends on voice n, so d loss / d voice_n sees
  # exactly the faces kept for n: moving face 2 (identity 0, like sample 0) leaves it unchanged.
  voice, face = randn(6, 6), randn(6, 6)
  identity = jnp.array([0, 1, 0, 2, 1, 2])
  grad = jax.jit(jax.grad(lambda v, f: baseline_losses.voice_face_infonce(v, f, identity)[0]))
  moved = face.copy()
  moved[2] = voice[0] * 3.0
  before, after = grad(voice, face), grad(voice, moved)
  np.testing.assert_allclose(after[0], before[0], **TOL)
  assert np.max(np.abs(after[1] - before[1])) > 1e-3  # face 2 is a negative of voice 1


def test_real_fake_contrastive_matches_numpy():
  voice, face = randn(16, 6), randn(16, 6)
  is_fake = RNG.random(16) < 0.5
  got = real_fake_contrastive(voice, face, is_fake, num_fakes=3)
  np.testing.assert_allclose(got, np_real_fake_contrastive(voice, face, is_fake, 3), **TOL)


def test_real_fake_contrastive_uses_only_the_first_fakes():
  voice, face = randn(24, 6), randn(24, 6)
  is_fake = np.zeros(24, bool)
  is_fake[[1, 3, 4, 6, 8, 9, 11, 13, 14, 16, 19, 20, 22]] = True  # 13 fakes
  base = real_fake_contrastive(voice, face, is_fake)
  np.testing.assert_allclose(base, np_real_fake_contrastive(voice, face, is_fake), **TOL)
  for index, changes in ((19, False), (16, True)):  # the 11th and the 10th fake
    moved = face.copy()
    moved[index] = voice[index]
    changed = real_fake_contrastive(voice, moved, is_fake)
    assert (abs(float(changed - base)) > 1e-3) == changes


def test_real_fake_contrastive_is_zero_without_fakes_or_reals():
  voice, face = randn(6, 4), randn(6, 4)
  for is_fake in (np.zeros(6, bool), np.ones(6, bool)):
    assert float(real_fake_contrastive(voice, face, is_fake)) == 0.0
    grads = jax.jit(jax.grad(baseline_losses.real_fake_contrastive, argnums=(0, 1)))(voice, face,
                                                                          is_fake)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_vfd_fake_logit_threshold():
  logit = vfd_fake_logit(jnp.array([-0.3, -0.1, 0.5]))
  np.testing.assert_allclose(logit, [0.2, 0.0, -0.6], **TOL)
  assert list(np.asarray(logit) > 0) == [True, False, False]


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------
def test_gradients_are_finite_with_masked_entries():
  # Absent and single-clip identities, masked same-identity faces, -inf logits of unchosen fakes.
  audio, video, embeddings = randn(2, 4, 8), randn(2, 4, 8), randn(6, 8)
  identity = np.array([0, 0, 1, 1, 3, 2], np.int32)  # identity 4 absent, 2 and 3 single
  is_fake = np.array([0, 1, 0, 1, 1, 0], np.int32)
  calls = [
      (lambda a: baseline_losses.window_infonce(a, video, -2.0)[0], audio),
      (lambda e: baseline_losses.identity_softmax_loss(e, identity, -1.0, num_identities=5)[0],
       embeddings),
      (lambda a: jnp.sum(baseline_losses.consistency_score(a, a, video)), audio),
      (lambda v: baseline_losses.voice_face_infonce(v, embeddings[::-1], identity)[0], embeddings),
      (lambda v: baseline_losses.real_fake_contrastive(v, embeddings[::-1], is_fake, 1),
       embeddings),
  ]
  for fn, x in calls:
    grad = jax.jit(jax.grad(fn))(x)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


# --------------------------------------------------------------------------------------------
# Local inconsistency head
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def head_run():
  audio, video = randn(2, 3, 8), randn(2, 3, 2, 4, 8)
  head = local_head.LocalInconsistencyHead()
  variables = jax.jit(head.init)(jax.random.key(0), audio, video)
  keys = iter(jax.random.split(jax.random.key(1), 8))
  params = jax.tree_util.tree_map(lambda p: jax.random.normal(next(keys), p.shape),
                                  nn.unbox(variables["params"]))  # non-zero biases too
  return head, variables, params, audio, video


def test_local_head_matches_numpy(head_run):
  head, _, params, audio, video = head_run
  out = jax.jit(head.apply)({"params": params}, audio, video)
  want_logit, want_distance, want_attention = np_local_head(
      jax.tree_util.tree_map(np.asarray, params), audio, video)
  assert out["logit"].shape == (2,) and out["attention"].shape == (2, 2, 4)
  np.testing.assert_allclose(out["distance"], want_distance, **TOL)
  np.testing.assert_allclose(out["attention"], want_attention, **TOL)
  np.testing.assert_allclose(out["logit"], want_logit, **TOL)
  np.testing.assert_allclose(np.sum(out["attention"], axis=(1, 2)), 1.0, **TOL)


def test_local_head_parameters_and_logical_axes(head_run):
  _, variables, _, _, _ = head_run
  specs = nn.get_partition_spec(variables)["params"]
  shapes = jax.tree_util.tree_map(np.shape, nn.unbox(variables["params"]))
  assert shapes == {"query": {"kernel": (8, 2), "bias": (2,)},
                    "key": {"kernel": (8, 2), "bias": (2,)},
                    "classifier": {"kernel": (8, 1), "bias": (1,)}}
  assert tuple(specs["query"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["key"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["classifier"]["kernel"]) == (None, None)
