"""Golden parity with the released code (base sizes, eval mode, float32 on CPU).

Weights come from the golden rule (``reference_weights.py``) through the reference key
mapping; inputs from the golden README's NumPy recipe. Every entry of
``tests/data/havic_golden.npz`` must match within 2e-4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from havic_jax.models import reference
from havic_jax.models.config import ModelConfig
from havic_jax.models.havic_models import build_model
from reference_weights import DATA, golden_state_dict, release_tables

TOLERANCE = 2e-4
GOLDEN = dict(np.load(DATA / "havic_golden.npz"))
TAPS = (3, 6, 9, 12)


def golden_inputs():
  rng = np.random.default_rng(1234)
  video = rng.random((2, 3, 16, 224, 224), dtype=np.float32)
  audio = rng.standard_normal((2, 1024, 128), dtype=np.float32)
  keep_sp = np.stack([rng.permutation(196)[:19] for _ in range(2)])
  ids_keep_video = np.concatenate([keep_sp + 196 * t for t in range(8)], axis=1)
  ids_keep_audio = np.stack([np.concatenate([rng.permutation(64)[:12] + 64 * s for s in range(8)])
                             for _ in range(2)])
  # Our video layout is channels-last [B, F, H, W, 3].
  return (video.transpose(0, 2, 3, 4, 1), audio, ids_keep_video.astype(np.int32),
          ids_keep_audio.astype(np.int32))


def summary(x) -> np.ndarray:
  """[mean, mean|x|, std, first 8 values] in float64, as the golden README defines it."""
  x = np.asarray(x, np.float64)
  return np.concatenate([[x.mean(), np.abs(x).mean(), x.std()], x.reshape(-1)[:8]])


def load_params(kind: str, name: str):
  cfg = ModelConfig()
  rules = reference.reference_rules(cfg, kind)
  state_dict = golden_state_dict(name, {**release_tables(rules.fixed), **rules.unused})
  params, _ = reference.from_reference(state_dict, cfg, kind)
  return cfg, jax.tree.map(jnp.asarray, params)


def assert_matches(results: dict):
  errors = {k: float(np.max(np.abs(results[k] - GOLDEN[k]))) for k in results}
  worst = max(errors, key=errors.get)
  assert set(results) == {k for k in GOLDEN if k.startswith(next(iter(results))[:3])}
  bad = {k: e for k, e in errors.items() if e > TOLERANCE}
  assert not bad, f"entries beyond {TOLERANCE}: {bad} (worst {worst})"


@pytest.mark.slow
def test_pretraining_model_matches_release():
  from havic_jax.detectors import havic_losses
  from havic_jax.models.patches import patchify_audio, patchify_video
  cfg, params = load_params("pretrain", "HAVIC_PT")
  video, audio, ids_v, ids_a = golden_inputs()

  @jax.jit
  def forward(params, video, audio, ids_v, ids_a):
    out = build_model(cfg, "pretrain").apply({"params": params}, video, audio, ids_v, ids_a)
    _, metrics = havic_losses.pretraining_loss(
        out, patchify_video(video, cfg), patchify_audio(audio, cfg), ids_v, ids_a,
        num_segments=cfg.num_segments,
        weights={"reconstruction": 1.0, "contrastive": 0.01, "cross_modal": 1.0})
    return out, metrics

  out, metrics = forward(params, video, audio, ids_v, ids_a)
  results = {}
  for stream, name in (("video", "visual_encoder"), ("audio", "audio_encoder")):
    for layer, x, full in zip(TAPS, out[f"{stream}_taps"], out[f"{stream}_full_taps"]):
      results[f"pt.{name}.masked.h{layer}"] = summary(x)
      results[f"pt.{name}.full.h{layer}"] = summary(full)
    for b, x in enumerate(out[f"{stream}_recon"]):
      results[f"pt.{'visual' if stream == 'video' else 'audio'}_decoder.{b}"] = summary(x)
  results["pt.AudioVisualInteractionModule.0"] = summary(out["interaction"][0])
  results["pt.AudioVisualInteractionModule.1"] = summary(out["interaction"][1])
  results["pt.A2V"] = summary(out["a2v"])
  results["pt.V2A"] = summary(out["v2a"])
  for key in ("rec_loss_video", "rec_loss_audio", "nce_loss", "nce_acc", "cross_loss_video",
              "cross_loss_audio"):
    results[f"pt.{key}"] = np.asarray([metrics[key]], np.float64)
  assert_matches(results)


@pytest.mark.slow
def test_finetuning_model_matches_release():
  cfg, params = load_params("finetune", "HAVIC_FT")
  video, audio, _, _ = golden_inputs()
  out = jax.jit(lambda p, v, a: build_model(cfg, "finetune").apply({"params": p}, v, a))(
      params, video, audio)
  results = {}
  for stream, name in (("video", "visual_encoder"), ("audio", "audio_encoder")):
    for layer, x in zip(TAPS, out[f"{stream}_taps"]):
      results[f"ft.{name}.h{layer}"] = summary(x)
  results["ft.AudioVisualInteractionModule.0"] = summary(out["interaction"][0])
  results["ft.AudioVisualInteractionModule.1"] = summary(out["interaction"][1])
  results["ft.pool_a"] = summary(out["pool_audio"])
  results["ft.pool_v"] = summary(out["pool_video"])
  for head, key in (("logit", "classifier"), ("audio_logit", "classifier_audio"),
                    ("video_logit", "classifier_visual")):
    results[f"ft.{key}"] = summary(out[head])
    results[f"ft.{head}"] = np.asarray(out[head], np.float64)
  assert_matches(results)
