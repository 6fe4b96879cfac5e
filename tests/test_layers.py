"""Sin-cos tables, token bookkeeping, patch layouts and the decoder schedule."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.tiny import tiny_model
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.decoders import hierarchical_schedule
from havic_jax.models.havic_models import build_model, example_inputs
from havic_jax.models.patches import patchify_audio, patchify_video


def test_sincos_1d_is_the_interleaved_formula():
  positions, dim = np.array([0, 1, 7, 100, 1567]), 768
  table = layers.sincos_1d(positions, dim)
  k = np.arange(dim // 2)
  angles = positions[:, None] / 10000.0 ** (2 * k / dim)
  np.testing.assert_allclose(table[:, 0::2], np.sin(angles), atol=2e-4)
  np.testing.assert_allclose(table[:, 1::2], np.cos(angles), atol=2e-4)
  np.testing.assert_array_equal(table[0], np.tile([0.0, 1.0], dim // 2))


def test_sincos_2d_halves_encode_time_then_mel():
  table = layers.sincos_2d(8, 64, 768)  # mel-major: index = f * 64 + t
  assert table.shape == (512, 768)
  f, t = 5, 37
  np.testing.assert_array_equal(table[f * 64 + t, :384], layers.sincos_1d(np.array([t]), 384)[0])
  np.testing.assert_array_equal(table[f * 64 + t, 384:], layers.sincos_1d(np.array([f]), 384)[0])


def test_scatter_inverts_gather_and_fills_the_rest():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 10, 3)), jnp.float32)
  ids = jnp.asarray([[7, 2, 5], [0, 9, 1]])
  visible = layers.gather_tokens(x, ids)
  np.testing.assert_array_equal(visible[1, 1], x[1, 9])
  fill = jnp.asarray([9.0, 9.0, 9.0])
  full = layers.scatter_tokens(visible, ids, fill, 10)
  for b in range(2):
    for n in range(10):
      want = x[b, n] if n in list(ids[b]) else fill
      np.testing.assert_array_equal(full[b, n], want)


def test_segment_tokens_round_trip():
  patches = jnp.arange(2 * 8 * 3 * 4, dtype=jnp.float32).reshape(2, 24, 4)
  tokens = -jnp.ones((2, 8, 4))
  seq = layers.insert_segment_tokens(tokens, patches, 8)
  assert seq.shape == (2, 32, 4)
  np.testing.assert_array_equal(seq[:, ::4], tokens)
  back_tokens, back_patches = layers.split_segment_tokens(seq, 8)
  np.testing.assert_array_equal(back_patches, patches)
  np.testing.assert_array_equal(back_tokens, tokens)


def test_video_patches_are_time_major_with_c_pt_ph_pw_values():
  cfg = ModelConfig()
  video = np.random.default_rng(1).random((1, 16, 224, 224, 3), dtype=np.float32)
  patches = np.asarray(patchify_video(jnp.asarray(video), cfg))
  assert patches.shape == (1, 1568, 1536)
  t, h, w = 3, 5, 11  # token index t * 196 + h * 14 + w
  c, pt, ph, pw = 2, 1, 4, 9  # value index ((c * 2 + pt) * 16 + ph) * 16 + pw
  want = video[0, 2 * t + pt, 16 * h + ph, 16 * w + pw, c]
  assert patches[0, t * 196 + h * 14 + w, ((c * 2 + pt) * 16 + ph) * 16 + pw] == want


def test_audio_patches_follow_the_segment_mode():
  audio = np.random.default_rng(2).standard_normal((1, 1024, 128)).astype(np.float32)
  f, t, row, col = 6, 41, 3, 12  # mel band f, time step t; row = mel, col = time in the patch
  want = audio[0, 16 * t + col, 16 * f + row]
  bands = np.asarray(patchify_audio(jnp.asarray(audio), ModelConfig()))
  assert bands[0, f * 64 + t, row * 16 + col] == want
  timed = np.asarray(patchify_audio(jnp.asarray(audio),
                                    ModelConfig(audio_segments="time")))
  assert timed[0, t * 8 + f, row * 16 + col] == want


def test_hierarchical_schedule():
  assert hierarchical_schedule((3, 6, 9, 12)) == ((12, 9, 6, 3), (9, 6, 3), (6, 3), (3,))


def test_compat_chooses_audio_segments():
  assert model_config_from(tiny_model(), "reference").audio_segments == "frequency_bands"
  assert model_config_from(tiny_model(), "paper").audio_segments == "time"


def _layer_norm_epsilons(model, params, inputs):
  """({LayerNorm path: epsilon} of one forward pass, the outputs); the epsilons are recorded
  while the jitted forward pass is traced."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.LayerNorm):
      seen["/".join(context.module.scope.path)] = context.module.epsilon
    return next_fun(*args, **kwargs)

  def forward(params, inputs):
    with nn.intercept_methods(record):
      return model.apply({"params": params}, *inputs)
  outputs = jax.jit(forward)(params, inputs)
  return seen, outputs


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_every_layer_norm_takes_its_epsilon_from_the_config(kind):
  cfg = model_config_from(tiny_model(), "reference")
  model = build_model(cfg, kind)
  params = nn.unbox(model.init(jax.random.PRNGKey(0),
                               *example_inputs(cfg, kind == "pretrain"))["params"])
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  video = jax.random.uniform(keys[0], (2, cfg.num_frames, cfg.image_size, cfg.image_size, 3))
  audio = jax.random.normal(keys[1], (2, cfg.audio_frames, cfg.mel_bins))
  inputs = example_inputs(cfg, kind == "pretrain", 2)
  inputs = (video, audio) + tuple(jnp.tile(jnp.arange(x.shape[1]), (2, 1)) for x in inputs[2:])
  norms = {"/".join(path[:-1]) for path in traverse_util.flatten_dict(params)
           if path[-1] == "scale"}
  epsilons, outputs = _layer_norm_epsilons(model, params, inputs)
  assert set(epsilons) == norms and set(epsilons.values()) == {cfg.layer_norm_eps}
  wide = dataclasses.replace(cfg, layer_norm_eps=0.5)
  epsilons, wide_outputs = _layer_norm_epsilons(build_model(wide, kind), params, inputs)
  assert set(epsilons) == norms and set(epsilons.values()) == {0.5}
  for out, wide_out in zip(jax.tree.leaves(outputs), jax.tree.leaves(wide_outputs)):
    assert not np.allclose(out, wide_out)
