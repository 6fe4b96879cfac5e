"""Released checkpoints as published: full-size state_dicts whose fixed sin-cos tables are the
release's own float32 arithmetic (not this project's) convert for every source, tables that are
really different are rejected by name, and a released file scores or initialises directly.

The release's tables are rebuilt in NumPy in its order of operations
(``reference_weights.release_sincos_1d`` / ``release_sincos_2d``); the check compares them with
float64 tables, so these tests see what a real ``.pth`` looks like.
"""

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs import pretrain_tiny
from havic_jax.checkpoints import exported, loading, released
from havic_jax.training import loop
from havic_jax.models import reference
from havic_jax.models.config import ModelConfig, model_config_from
from reference_weights import (golden_value, release_sincos_1d, release_sincos_2d,
                               release_tables)

BASE = ModelConfig()
VIDEO_TABLE = "visual_encoder.pos_embedding.emb"
# The released HAVIC pretraining model's tables, the MARLIN names of its video tables.
RULES = {"marlin": released.marlin_rules, "audiomae": released.audiomae_rules}


def release_state_dict(cfg, source, power_ulps=0):
  """Random weights for every key of ``source`` at ``cfg``'s sizes; fixed tables as the release
  computes them (its power function ``power_ulps`` float32 units away), unused tensors as the
  rules give them."""
  sd = {k: golden_value(k, shape) for k, shape in released.source_shapes(cfg, source).items()}
  rules = (RULES[source](cfg) if source in RULES
           else reference.reference_rules(cfg, released.HAVIC_SOURCES[source]))
  sd.update(rules.unused)
  sd.update(release_tables(rules.fixed, power_ulps))
  return sd


@pytest.fixture(scope="module")
def base_pretrain():
  return release_state_dict(BASE, "havic_pretrain")


@pytest.mark.slow
@pytest.mark.parametrize("source,power_ulps", [("havic_pretrain", 0), ("havic_finetune", 1),
                                               ("marlin", -1), ("audiomae", 0)])
def test_a_released_base_file_converts_with_every_key_accounted_for(source, power_ulps,
                                                                    tmp_path):
  sd = release_state_dict(BASE, source, power_ulps)
  path = tmp_path / f"{source}.safetensors"
  save_file(sd, str(path))
  loaded = released.load_released(str(path))
  assert loaded.source == source and loaded.model_config == BASE
  report = loaded.report
  statuses = [set(report[s]) for s in ("loaded", "recomputed", "unused")]
  assert sum(len(s) for s in statuses) == len(sd) and set().union(*statuses) == set(sd)
  # Each table's largest difference is recorded: not zero (the release's float32 arithmetic
  # is not this project's), and well inside what float32 rounding allows.
  assert set(report["fixed_tables"]) == set(report["recomputed"])
  for key, table in report["fixed_tables"].items():
    rows = sd[key].shape[1]
    assert 0 < table["max_abs_diff"] <= table["tolerance"], key
    assert table["tolerance"] < 1e-3 * max(rows, 8) / 1568, key  # tight: scales with length
  # Every parameter has this config's shape (no allocation: shapes only).
  left = exported.leaves_left_out(loaded.params, BASE, loaded.stage)
  assert (left == []) == (source in released.HAVIC_SOURCES)
  params = jax.tree.leaves(loaded.params)
  assert all(np.all(np.isfinite(p)) for p in params)


def test_the_video_table_of_the_release_differs_from_ours_by_float32_rounding():
  table = reference.reference_rules(BASE, "pretrain").fixed[VIDEO_TABLE]
  ours = table.exact.astype(np.float32)
  for ulps in (0, 1, -1, 2):
    release = release_sincos_1d(BASE.video_tokens, BASE.width, power_ulps=ulps)[None]
    largest, _ = table.difference(release)
    assert 1e-5 < largest < table.tolerance  # beyond the old fixed 1e-5, inside the bound
    assert float(np.max(np.abs(release - ours))) > 1e-5
  # The bound follows float32's epsilon at the table's largest angle (1567 rad), not a constant.
  assert 1567 * np.finfo(np.float32).eps < table.tolerance < 10 * 1567 * np.finfo(np.float32).eps


def _shifted(n, d):
  return release_sincos_1d(n + 1, d)[1:]


def _swapped(n, d):
  table = release_sincos_1d(n, d)
  return np.stack([table[:, 1::2], table[:, 0::2]], axis=-1).reshape(n, d)


def _temperature_1000(n, d):
  return release_sincos_1d(n, d, temperature=1000.0)


def _audio_layout(n, d):
  """The 2-D audio layout (time half, band half) over as many positions as the video table."""
  return release_sincos_2d(BASE.num_segments, n // BASE.num_segments, d)


@pytest.mark.slow
@pytest.mark.parametrize("planted", [_shifted, _swapped, _temperature_1000, _audio_layout])
def test_a_table_that_is_really_different_is_rejected_by_key_and_difference(base_pretrain,
                                                                           planted):
  bad = planted(BASE.video_tokens, BASE.width)[None].astype(np.float32)
  exact = reference.reference_rules(BASE, "pretrain").fixed[VIDEO_TABLE].exact
  largest = float(np.max(np.abs(bad - exact)))
  assert largest > 0.05
  with pytest.raises(reference.ReferenceMappingError) as error:
    reference.from_reference({**base_pretrain, VIDEO_TABLE: bad}, BASE, "pretrain")
  message = str(error.value)
  assert f"{VIDEO_TABLE}: largest |difference| {largest:.3g}" in message
  assert "not the sin-cos tables" in message


@pytest.mark.slow
def test_the_audio_table_in_the_video_tables_place_is_a_shape_error(base_pretrain):
  audio = release_sincos_2d(BASE.audio_mel_tokens, BASE.audio_time_tokens, BASE.width)[None]
  with pytest.raises(reference.ReferenceMappingError,
                     match=rf"{VIDEO_TABLE}: got \(1, 512, 768\), expected \(1, 1568, 768\)"):
    reference.from_reference({**base_pretrain, VIDEO_TABLE: audio}, BASE, "pretrain")


def test_a_non_finite_table_is_rejected():
  tiny = model_config_from(pretrain_tiny.get_config().model)
  sd = release_state_dict(tiny, "havic_pretrain")
  sd[VIDEO_TABLE] = sd[VIDEO_TABLE].copy()
  sd[VIDEO_TABLE][0, 3, 5] = np.nan
  with pytest.raises(reference.ReferenceMappingError,
                     match=rf"{VIDEO_TABLE}: largest \|difference\| inf at position 3, column 5"):
    reference.from_reference(sd, tiny, "pretrain")


def test_a_file_of_another_model_names_its_keys(tmp_path):
  path = tmp_path / "resnet.npz"
  np.savez(path, **{"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
                    "fc.bias": np.zeros(1000, np.float32)})
  with pytest.raises(ValueError, match=r"neither a HAVIC .* nor AudioMAE state_dict: its keys "
                                       r"\['conv1.weight', 'fc.bias'\]"):
    released.load_released(str(path))


@pytest.mark.slow
def test_eval_takes_a_released_finetuning_file(tmp_path):
  path = tmp_path / "havic_ft.safetensors"
  save_file(release_state_dict(BASE, "havic_finetune"), str(path))
  checkpoint = loading.load(str(path))
  assert checkpoint.stage == "finetune" and checkpoint.has_classifier
  assert checkpoint.description["kind"] == "released"
  assert checkpoint.description["source"] == "havic_finetune"
  assert VIDEO_TABLE in checkpoint.description["fixed_tables"]
  assert list(tmp_path.iterdir()) == [path]  # nothing written


def test_eval_refuses_an_initialisation_file(tmp_path):
  tiny = model_config_from(pretrain_tiny.get_config().model)
  path = tmp_path / "marlin.npz"
  np.savez(path, **release_state_dict(tiny, "marlin"))
  with pytest.raises(loading.CheckpointError, match="a marlin state_dict; .*AudioMAE ones "
                                                    "initialise training"):
    loading.load(str(path), releases=tuple(released.HAVIC_SOURCES))


def test_pretraining_starts_from_released_marlin_and_audiomae_files(tmp_path):
  config = pretrain_tiny.get_config()
  config.unlock()
  cfg = model_config_from(config.model, config.compat)
  files = []
  for source in ("marlin", "audiomae"):
    files.append(tmp_path / f"{source}.npz")
    np.savez(files[-1], **release_state_dict(cfg, source))
  config.init_from = ",".join(str(f) for f in files)
  config.num_steps, config.data.source = 1, "random"
  config.optimizer.peak_learning_rate = 0.0  # the step leaves the loaded values as they are
  loop.run(config, str(tmp_path / "run"))
  params = loading.load(str(tmp_path / "run")).params
  marlin = release_state_dict(cfg, "marlin")
  np.testing.assert_allclose(params["video_encoder"]["block_0"]["attn"]["proj"]["kernel"],
                             marlin["encoder.blocks.0.attn.proj.weight"].T, atol=1e-6)
  audiomae = release_state_dict(cfg, "audiomae")
  np.testing.assert_allclose(params["audio_encoder"]["block_1"]["mlp"]["fc1"]["kernel"],
                             audiomae["blocks.1.mlp.fc1.weight"].T, atol=1e-6)
  # HAVIC's additions keep their initialisation (MARLIN has no segment tokens).
  assert np.abs(params["video_encoder"]["segment_tokens"]).max() > 0
