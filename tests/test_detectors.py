"""The detectors on the shared backbone: their time-aligned features, scores and protocols
against independent computations, their data (identity groups, real-only, pseudo-fakes), and
a checkpoint of each scored by the eval binary."""

import ast
import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (consistency_tiny, fakeout_tiny, fine_grained_tiny, finetune_tiny,
                     pretrain_tiny, voice_face_finetune_tiny, voice_face_pretrain_tiny)
from havic_jax import detectors, sharding
from havic_jax.data import input_pipeline, records, samplers
from havic_jax.training import loop
from havic_jax.evaluation import evaluate, inputs, per_video, videos
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax.detectors import consistency, encoder_features, fakeout
from havic_jax.models.config import model_config_from
from havic_jax.models.havic_models import example_inputs

CONFIGS = {"consistency": consistency_tiny, "voice_face_pretrain": voice_face_pretrain_tiny,
           "voice_face_finetune": voice_face_finetune_tiny, "fine_grained": fine_grained_tiny,
           "fakeout": fakeout_tiny}
INTERFACE = ("build_model", "loss_fn", "window_outputs")  # every detector module's


def _cos(x, y):
  return np.sum(x * y, -1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)


@pytest.mark.parametrize("segments", ["frequency_bands", "time"])
def test_audio_and_video_time_features_pool_the_right_tokens(segments):
  cfg = model_config_from(consistency_tiny.get_config().model, "reference")
  cfg = dataclasses.replace(cfg, audio_segments=segments)
  # Audio tokens carry (mel, time) of their grid cell, in the configured token order.
  mel, time = np.meshgrid(np.arange(cfg.audio_mel_tokens), np.arange(cfg.audio_time_tokens),
                          indexing="ij")
  grid = np.stack([mel.reshape(-1), time.reshape(-1)], -1).astype(np.float32)  # mel-major
  from havic_jax.models.patches import audio_token_order
  tokens = grid[audio_token_order(cfg)][None]
  steps = 4
  pooled = np.asarray(encoder_features.audio_time_features(jnp.asarray(tokens), cfg, steps))[0]
  per_step = cfg.audio_time_tokens // steps
  np.testing.assert_allclose(pooled[:, 1], [np.mean(np.arange(s * per_step, (s + 1) * per_step))
                                            for s in range(steps)])
  np.testing.assert_allclose(pooled[:, 0], np.mean(np.arange(cfg.audio_mel_tokens)))
  # Video tokens are time-major: index = t·G² + h·G + w.
  g, t = cfg.video_grid, cfg.video_time_tokens
  index = np.arange(cfg.video_tokens, dtype=np.float32)
  video = np.stack([index // (g * g), index % g], -1)[None]
  grid_features = np.asarray(encoder_features.video_grid_features(jnp.asarray(video), cfg, 2))[0]
  assert grid_features.shape == (2, g, g, 2)
  np.testing.assert_allclose(grid_features[1, :, :, 0], np.mean(np.arange(t // 2, t)))
  np.testing.assert_allclose(grid_features[0, 0, :, 1], np.arange(g))


def test_batch_identity_slots():
  slots = consistency.batch_identity_slots(jnp.array([7, 3, 7, 9, 3, 3]))
  np.testing.assert_array_equal(slots, [0, 1, 0, 3, 1, 1])


def _scorer(cfg, config):
  return detectors.window_scorer(cfg, detectors.detector_name(config), config.stage,
                                 detectors.options_of(config))


def _model_and_params(module, name, **overrides):
  config = module.get_config()
  config.detector.update(overrides)
  cfg = model_config_from(config.model, config.compat)
  model = detectors.build_model(cfg, config)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), *example_inputs(cfg, False, 2)
                               )["params"]
  video = np.random.default_rng(0).integers(0, 255, (3,) + example_inputs(cfg, False)[0]
                                            .shape[1:], np.uint8)
  audio = np.random.default_rng(1).standard_normal((3, cfg.audio_frames, cfg.mel_bins),
                                                   np.float32)
  return config, cfg, model, params, video, audio


REGISTERED = [(name, stage) for name, info in sorted(detectors.DETECTORS.items())
              for stage in info.stages]


@pytest.mark.parametrize("name, stage", REGISTERED)
def test_every_detector_trains_and_scores_through_the_registry(name, stage):
  """Each registered detector, HAVIC included, is a module with the same interface: its model,
  loss and window scorer come from the registry by name alone (shapes only: nothing runs)."""
  config = {"pretrain": pretrain_tiny, "finetune": finetune_tiny}[stage].get_config()
  config.detector.name, config.detector.num_identities = name, 4
  detector = detectors.info(config)
  assert all(callable(getattr(detector.module, f)) for f in INTERFACE)
  cfg = model_config_from(config.model, config.compat)
  model = detectors.build_model(cfg, config)
  kept_tokens = detectors.kept_token_inputs(config)
  assert kept_tokens == (stage in detector.masked_stages)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                   *example_inputs(cfg, kept_tokens, 2))["params"])
  ratios = ({"video_mask_ratio": config.pretrain.video_mask_ratio,
             "audio_mask_ratio": config.pretrain.audio_mask_ratio} if stage == "pretrain" else {})
  spec = input_pipeline.example_spec(cfg, stage, **ratios)
  if detector.identities:
    spec["identity"] = ((), np.int32)
  batch = {key: jax.ShapeDtypeStruct((4,) + shape, dtype) for key, (shape, dtype) in spec.items()}
  loss, metrics = jax.eval_shape(detectors.loss_fn(model, cfg, config), params, batch,
                                 jax.random.PRNGKey(1))
  assert loss.shape == () and metrics["total"].shape == ()
  if stage in detector.unscored_stages:
    with pytest.raises(ValueError, match="no fake logit"):
      detectors.window_scorer(cfg, name, stage, detectors.options_of(config))
    return
  scores = jax.eval_shape(detectors.window_scorer(cfg, name, stage, detectors.options_of(config)),
                          params, batch["video"], batch["audio"])
  assert scores["overall"].shape == (4,)


def test_the_registry_has_no_detector_specific_branch():
  """``havic_jax.detectors`` finds detectors by name: no comparison with a detector's name and
  no import of a detector module."""
  path = pathlib.Path(detectors.__file__)
  tree = ast.parse(path.read_text())
  names = set(detectors.DETECTORS) | {"HAVIC"}
  for node in ast.walk(tree):
    if isinstance(node, ast.Compare):
      operands = [node.left] + node.comparators
      named = [getattr(o, "value", getattr(o, "id", None)) for o in operands]
      assert not names & {n for n in named if isinstance(n, str)}, ast.unparse(node)
    if isinstance(node, ast.ImportFrom):
      imported = {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
      assert not {f"havic_jax.detectors.{n}" for n in detectors.DETECTORS} & imported


def test_consistency_window_score_is_minus_intra_plus_cross():
  config, cfg, model, params, video, audio = _model_and_params(consistency_tiny, "consistency")
  out = jax.device_get(model.apply({"params": params}, video / 255.0, audio))
  scores = jax.device_get(_scorer(cfg, config)(params, video, audio))
  for b in range(3):
    cross = np.mean(_cos(out["audio"][b], out["video"][b]))
    e = out["identity"][b]
    pairs = [_cos(e[i], e[j]) for i in range(len(e)) for j in range(i + 1, len(e))]
    np.testing.assert_allclose(scores["overall"][b], -(np.percentile(pairs, 20) + cross),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores["coherence"][b], _cos(out["audio"][b], out["video"][b]),
                               rtol=1e-4, atol=1e-5)


def test_voice_face_scores_the_middle_frame_against_the_voice():
  config, cfg, model, params, video, audio = _model_and_params(
      voice_face_pretrain_tiny, "voice_face", num_identities=5)
  scores = jax.device_get(_scorer(cfg, config)(params, video, audio))
  out = jax.device_get(model.apply({"params": params}, video / 255.0, audio))
  np.testing.assert_allclose(scores["overall"], -0.1 - _cos(out["voice"], out["face"]),
                             rtol=1e-4, atol=1e-5)
  assert out["voice_identity"].shape == (3, 5)
  # The face stream sees one frame: changing any other frame leaves the face embedding alone.
  middle = cfg.num_frames // 2
  changed = video.copy()
  changed[:, middle + 1] = 0
  again = jax.device_get(model.apply({"params": params}, changed / 255.0, audio))
  np.testing.assert_allclose(again["face"], out["face"], rtol=1e-6)
  changed[:, middle] = 0
  moved = jax.device_get(model.apply({"params": params}, changed / 255.0, audio))
  assert np.abs(moved["face"] - out["face"]).max() > 1e-3


def test_fakeout_video_logit_is_the_max_over_tracks_of_nine_uniform_clips():
  np.testing.assert_array_equal(fakeout.clip_subset(5), np.arange(5))
  np.testing.assert_array_equal(fakeout.clip_subset(17), [0, 2, 4, 6, 8, 10, 12, 14, 16])
  assert len(fakeout.clip_subset(18)) == 9
  logits = np.concatenate([np.arange(17.0), -np.arange(17.0)])
  tracks = np.repeat([0, 1], 17)
  assert fakeout.video_logit(logits, tracks) == pytest.approx(np.mean(np.arange(0, 17, 2)))
  assert fakeout.video_logit(-logits, tracks) == pytest.approx(np.mean(np.arange(0, 17, 2)))
  result = per_video.video_result(
      videos.EvalVideo("v", "v.mp4", 1, "FVFA", "", ("test",)),
      inputs.WindowInputs("ok", "", None, None, np.tile(np.arange(17) * 0.4, 2), "overall",
                          tracks),
      {"overall": logits}, classifier=True)
  assert result.score == pytest.approx(1 / (1 + np.exp(-np.mean(np.arange(0, 17, 2)))))
  assert result.least_coherent == []  # FakeOut gives no coherence


def test_identity_groups_and_real_only(prepared_corpus):
  data = records.open_prepared(str(prepared_corpus))
  indices = data.real_indices(data.split_indices(None))
  assert set(data.record_labels()[indices]) == {0}
  videos = {v["video_id"]: v for v in data.manifest["videos"]}
  record_video = {}
  for v in videos.values():
    for i in range(v["first_record"], v["first_record"] + v["clips"]):
      record_video[i] = v["video_id"]
  sampler = samplers.identity_groups(data, indices, 4, 2, seed=5)
  identities = data.record_identities()
  for batch in range(20):
    picks = [sampler(batch * 4 + slot) for slot in range(4)]
    assert picks == [sampler(batch * 4 + slot) for slot in range(4)]  # deterministic
    assert all(p in set(indices.tolist()) for p in picks)
    for group in (picks[:2], picks[2:]):
      assert identities[group[0]] == identities[group[1]]
      same_identity = {record_video[i] for i in indices if identities[i] == identities[group[0]]}
      if len(same_identity) >= 2:
        assert record_video[group[0]] != record_video[group[1]]
  vocabulary = data.identity_vocabulary(indices)
  assert sorted(vocabulary.values()) == list(range(len(vocabulary)))
  config = consistency_tiny.get_config()
  config.data.split = ""
  cfg = model_config_from(config.model, config.compat)
  batch = next(loop.training_iterator(data, config, cfg, sharding.make_mesh(config.mesh)))
  assert batch["identity"].dtype == np.int32 and len(batch["identity"]) == config.batch_size
  names = {i: n for n, i in data.identity_vocabulary(indices).items()}
  pairs = batch["identity"].reshape(-1, 2)
  assert (pairs[:, 0] == pairs[:, 1]).all() and all(i in names for i in batch["identity"])


def test_pseudo_fakes_in_the_fine_tuning_pipeline(prepared_corpus):
  data = records.open_prepared(str(prepared_corpus))
  config = fine_grained_tiny.get_config()
  config.data.split, config.data.balanced = "", False
  config.pseudo_fakes.probability = 1.0
  cfg = model_config_from(config.model, config.compat)
  batch = next(loop.training_iterator(data, config, cfg, sharding.make_mesh(config.mesh)))
  assert (batch["overall_label"] == 1).all()  # every clip became (or was) a fake
  assert (np.maximum(batch["audio_label"], batch["visual_label"]) == 1).all()


# About 40 s each on 2 cores: long_run. In the default suite, tests/test_compare.py trains the
# voice–face detector end to end (identity-grouped real-only pretraining, fine-tuning from it,
# the eval binary).
@pytest.mark.long_run
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_detector_trains_and_the_eval_binary_scores_it(name, prepared_corpus, tmp_path):
  """Two training steps on the prepared corpus, validation on its test split, then the eval
  binary on the prepared clips: every real and fake video gets a finite score, and the video
  score is the sigmoid of the mean window logit."""
  config = CONFIGS[name].get_config()
  config.num_steps, config.eval_every, config.data.split = 2, 2, ""
  config.data.source, config.data.path = "prepared", str(prepared_corpus)
  state, metrics = loop.run(config, str(tmp_path / "run"))
  assert int(state.step) == 2 and np.isfinite(metrics["total"])
  assert 0.0 <= metrics["eval/auc"] <= 1.0
  outcome = evaluate.run(str(tmp_path / "run"), str(prepared_corpus), EvalOptions(
      protocol="all", output=str(tmp_path / "report"), batch_size=8))
  scored = [v for v in outcome["videos"] if v.status == "ok"]
  assert {v.label for v in scored} == {0, 1}
  for video in scored:
    logits = np.log(np.asarray(video.window_scores)) - np.log1p(-np.asarray(video.window_scores))
    assert video.score == pytest.approx(1 / (1 + np.exp(-logits.mean())), rel=1e-5)


@pytest.mark.parametrize("name", ["fakeout", "voice_face_finetune", "finetune", "pretrain"])
def test_a_checkpoint_scores_itself_only_with_its_whole_scoring_model(name):
  from flax import traverse_util
  from havic_jax.checkpoints import loading
  config = {**CONFIGS, "finetune": finetune_tiny, "pretrain": pretrain_tiny}[name].get_config()
  if "num_identities" in config.get("detector", {}):
    config.detector.num_identities = 4  # what a trained workdir's config holds
  cfg = model_config_from(config.model, config.compat)
  detector = detectors.detector_name(config)
  paths = detectors.param_paths(cfg, detector, config.stage, detectors.options_of(config))
  assert len(paths) > 20 and ("audio_encoder", "block_0", "mlp", "fc1", "kernel") in paths
  whole = traverse_util.unflatten_dict({path: np.zeros(1) for path in paths})
  assert loading.Checkpoint(cfg, config.stage, whole, {}, config).has_classifier == (
      name != "pretrain")  # HAVIC's pretraining model gives no fake logit
  partial = traverse_util.unflatten_dict({path: np.zeros(1) for path in paths[:-1]})
  assert not loading.Checkpoint(cfg, config.stage, partial, {}, config).has_classifier
