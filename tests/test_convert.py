"""PyTorch checkpoint import (HAVIC, MARLIN, AudioMAE) and the export format, round trips and CLIs.

Layouts are checked against independent expectations: the release's key lists (tests/data), and
convolutions / position tables evaluated directly from the PyTorch-layout weights.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import havic_jax
from configs import finetune_tiny
from configs.tiny import tiny_model
from havic_jax.checkpoints import exported, loading, released
from havic_jax.models import reference
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.patches import patchify_audio, patchify_video
from reference_weights import golden_value, read_key_shapes

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = model_config_from(tiny_model())
RULES = {"marlin": released.marlin_rules, "audiomae": released.audiomae_rules}


def source_state_dict(cfg, source):
  """Random values for every key of ``source``; fixed tables at their sin-cos values, tensors
  unused by design as zeros."""
  sd = {k: golden_value(k, shape) for k, shape in released.source_shapes(cfg, source).items()}
  if source in RULES:
    rules = RULES[source](cfg)
  else:
    rules = reference.reference_rules(cfg, released.HAVIC_SOURCES[source])
  sd.update(rules.fixed_values())
  sd.update(rules.unused)
  return sd


def accounted_for(report, state_dict):
  statuses = [set(report[s]) for s in ("loaded", "recomputed", "unused")]
  assert sum(len(s) for s in statuses) == len(state_dict)  # each key exactly once
  assert set().union(*statuses) == set(state_dict)


@pytest.mark.parametrize("source,name", [("marlin", "MARLIN_vit_base"),
                                         ("audiomae", "AudioMAE_vit_base")])
def test_base_mapping_covers_the_released_key_lists(source, name):
  assert released.source_shapes(ModelConfig(), source) == read_key_shapes(name)


def test_marlin_lands_in_the_video_encoder_and_decoder():
  sd = source_state_dict(TINY, "marlin")
  params, report = released.convert_state_dict(sd, TINY, "marlin")
  accounted_for(report, sd)
  assert report["recomputed"] == ["decoder.pos_embedding.emb", "encoder.pos_embedding.emb"]
  assert report["unused"] == []
  assert set(params) == {"video_encoder", "video_decoder"}
  enc, dec = params["video_encoder"], params["video_decoder"]
  # Linear (out, in) -> kernel (in, out).
  np.testing.assert_array_equal(enc["block_1"]["attn"]["proj"]["kernel"],
                                sd["encoder.blocks.1.attn.proj.weight"].T)
  np.testing.assert_array_equal(enc["block_0"]["mlp"]["fc2"]["kernel"],
                                sd["encoder.blocks.0.mlp.layers.1.linear.weight"].T)
  np.testing.assert_array_equal(enc["block_0"]["attn"]["v_bias"],
                                sd["encoder.blocks.0.attn.v_bias"])
  np.testing.assert_array_equal(dec["embed"]["kernel"], sd["enc_dec_proj.weight"].T)
  np.testing.assert_array_equal(dec["mask_token"], sd["decoder.mask_token"].reshape(-1))
  last = TINY.decoder_depth - 1
  np.testing.assert_array_equal(dec[f"head_{last}"]["kernel"], sd["decoder.head.weight"].T)
  assert "head_0" not in dec and "segment_tokens" not in enc
  assert {"video_encoder/segment_tokens", "video_decoder/head_0/kernel",
          "video_decoder/hia_1/q/kernel"} <= set(report["left_at_initialisation"])
  # The Conv3d patch embedding, evaluated on a video in PyTorch's layout.
  video = np.random.default_rng(0).random(
      (1, TINY.num_frames, TINY.image_size, TINY.image_size, 3), dtype=np.float32)
  weight, bias = (sd["encoder.patch_embedding.projection.weight"],
                  sd["encoder.patch_embedding.projection.bias"])
  pt, p, t, h, w = TINY.tubelet_size, TINY.patch_size, 2, 1, 3  # one tubelet
  cube = video[0, t * pt:(t + 1) * pt, h * p:(h + 1) * p, w * p:(w + 1) * p]  # [pt, p, p, c]
  expected = np.einsum("ocxyz,xyzc->o", weight, cube) + bias
  token = (t * TINY.video_grid + h) * TINY.video_grid + w
  ours = np.asarray(patchify_video(video, TINY))[0, token] @ enc["patch_embed"]["kernel"]
  np.testing.assert_allclose(ours + enc["patch_embed"]["bias"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("segments", ["frequency_bands", "time"])
def test_audiomae_lands_in_the_audio_encoder(segments):
  cfg = model_config_from({**tiny_model(), "audio_segments": segments})
  sd = source_state_dict(cfg, "audiomae")
  d, mel, time = cfg.width, cfg.audio_mel_tokens, cfg.audio_time_tokens
  sd["pos_embed"][0, 0] = 7.0  # the CLS row, recognisable
  sd["blocks.1.attn.qkv.bias"][d + 3] = 5.0  # the largest k bias of the encoder
  sd["decoder_blocks.0.attn.qkv.bias"][:] = 9.0  # the decoder's is not the encoder's
  params, report = released.convert_state_dict(sd, cfg, "audiomae")
  accounted_for(report, sd)
  assert report["recomputed"] == []
  assert "cls_token" in report["unused"] and "decoder_blocks.15.attn.tau" in report["unused"]
  assert set(report["left_at_initialisation"]) == {"audio_encoder/modality",
                                                   "audio_encoder/segment_tokens"}
  enc = params["audio_encoder"]
  # The fused qkv bias: q = first D values, v = last D; the k part is dropped (and noted).
  qkv_bias = sd["blocks.1.attn.qkv.bias"]
  np.testing.assert_array_equal(enc["block_1"]["attn"]["q_bias"], qkv_bias[:d])
  np.testing.assert_array_equal(enc["block_1"]["attn"]["v_bias"], qkv_bias[2 * d:])
  assert any("k bias" in note and "dropped (largest |value| 5, in blocks.1.attn.qkv.bias)"
             in note for note in report["notes"])
  assert any("epsilon" in note and "1e-06" in note for note in report["notes"])
  np.testing.assert_array_equal(enc["block_0"]["attn"]["qkv"]["kernel"],
                                sd["blocks.0.attn.qkv.weight"].T)
  np.testing.assert_array_equal(enc["block_1"]["mlp"]["fc1"]["kernel"],
                                sd["blocks.1.mlp.fc1.weight"].T)
  # Position table: CLS row dropped; AudioMAE's row 1 + t·F + f is the token of band f, step t.
  pos, table = enc["pos_embed"], sd["pos_embed"][0]
  assert pos.shape == (mel * time, d) and not np.any(pos == 7.0)
  f, t = 5, 11
  token = f * time + t if segments == "frequency_bands" else t * mel + f
  np.testing.assert_array_equal(pos[token], table[1 + t * mel + f])
  # The patch kernel, evaluated on a [time, mel] fbank as AudioMAE's Conv2d sees it.
  fbank = np.random.default_rng(1).standard_normal((1, cfg.audio_frames, cfg.mel_bins),
                                                   dtype=np.float32)
  p = cfg.audio_patch_size
  weight, bias = sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
  expected = np.einsum("oij,ij->o", weight[:, 0],
                       fbank[0, t * p:(t + 1) * p, f * p:(f + 1) * p]) + bias
  ours = np.asarray(patchify_audio(fbank, cfg))[0, token] @ enc["patch_embed"]["kernel"]
  np.testing.assert_allclose(ours + enc["patch_embed"]["bias"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source,missing,wrong", [
    ("marlin", "encoder.blocks.1.norm2.bias", "decoder.blocks.0.attn.q_bias"),
    ("audiomae", "blocks.0.attn.proj.bias", "blocks.1.attn.qkv.bias"),
    ("havic_finetune", "pool_v.weights", "classifier.output_layer.bias"),
])
def test_errors_name_the_offending_keys(source, missing, wrong):
  sd = source_state_dict(TINY, source)
  without = {k: v for k, v in sd.items() if k != missing}
  with pytest.raises(reference.ReferenceMappingError, match=rf"missing keys: \['{missing}'\]"):
    released.convert_state_dict(without, TINY, source)
  extra = dict(sd, **{"encoder.extra_head.weight": np.zeros(3, np.float32)})
  with pytest.raises(reference.ReferenceMappingError,
                     match=r"unexpected keys: \['encoder.extra_head.weight'\]"):
    released.convert_state_dict(extra, TINY, source)
  mis_shaped = dict(sd, **{wrong: np.zeros(7, np.float32)})
  with pytest.raises(reference.ReferenceMappingError, match=rf"\['{wrong}: got \(7,\)"):
    released.convert_state_dict(mis_shaped, TINY, source)


def test_marlin_position_table_must_be_the_sin_cos_one():
  sd = source_state_dict(TINY, "marlin")
  sd["decoder.pos_embedding.emb"] = sd["decoder.pos_embedding.emb"] + 1e-3
  with pytest.raises(reference.ReferenceMappingError,
                     match="not the sin-cos tables.*decoder.pos_embedding.emb: largest"):
    released.convert_state_dict(sd, TINY, "marlin")


@pytest.fixture(scope="module")
def pretrain_params():
  params, _ = reference.from_reference(source_state_dict(TINY, "havic_pretrain"), TINY,
                                       "pretrain")
  return params


def assert_trees_equal(actual, expected):
  flat_actual, flat_expected = exported.flatten_params(actual), exported.flatten_params(expected)
  assert flat_actual.keys() == flat_expected.keys()
  for key, value in flat_expected.items():
    np.testing.assert_array_equal(flat_actual[key], value, err_msg=key)


@pytest.mark.parametrize("compat", ["reference", "paper"])
def test_export_round_trip_through_orbax_and_safetensors(pretrain_params, tmp_path, compat):
  out = exported.export_params(pretrain_params, tiny_model(), "pretrain", compat, tmp_path / "x",
                             source={"workdir": "/runs/a"})
  backbone = {name: pretrain_params[name]
              for name in ("video_encoder", "audio_encoder", "interaction")}
  description = json.loads((out / exported.CONFIG_FILE).read_text())
  assert description["modules"] == ["video_encoder", "audio_encoder", "interaction"]
  assert description["stage"] == "pretrain" and description["compat"] == compat
  assert description["left_at_initialisation"] == []
  assert description["source"] == {"workdir": "/runs/a"}
  flat = load_file(str(out / exported.SAFETENSORS_FILE))
  np.testing.assert_array_equal(
      flat["video_encoder/block_0/attn/qkv/kernel"],
      pretrain_params["video_encoder"]["block_0"]["attn"]["qkv"]["kernel"])
  expected_cfg = model_config_from(tiny_model(), compat)
  assert expected_cfg.audio_segments == {"reference": "frequency_bands", "paper": "time"}[compat]

  checkpoint = loading.load(str(out))  # Orbax
  cfg, params = checkpoint.model_config, checkpoint.params
  assert cfg == expected_cfg
  assert_trees_equal(params, backbone)
  cfg, params = havic_jax.load_pretrained(str(out))  # the README's downstream entry point
  assert cfg == expected_cfg
  assert_trees_equal(params, backbone)
  shutil.rmtree(out / exported.ORBAX_DIR)
  checkpoint = loading.load(str(out))  # safetensors
  cfg, params = checkpoint.model_config, checkpoint.params
  assert cfg == expected_cfg
  assert_trees_equal(params, backbone)


def test_export_errors(pretrain_params, tmp_path):
  with pytest.raises(exported.ExportError, match=r"no modules \['classifier'\]"):
    exported.export_params(pretrain_params, tiny_model(), "pretrain", "reference", tmp_path / "a",
                         modules=("video_encoder", "classifier"))
  bad = {"video_encoder": dict(pretrain_params["video_encoder"], extra=np.zeros(2))}
  with pytest.raises(exported.ExportError, match=r"unknown \['video_encoder/extra'\]"):
    exported.export_params(bad, tiny_model(), "pretrain", "reference", tmp_path / "b",
                         modules=("video_encoder",))
  norm = dict(pretrain_params["video_encoder"]["norm"], scale=np.ones(3, np.float32))
  bad = {"video_encoder": dict(pretrain_params["video_encoder"], norm=norm)}
  with pytest.raises(exported.ExportError, match=r"video_encoder/norm/scale: \(3,\)"):
    exported.export_params(bad, tiny_model(), "pretrain", "reference", tmp_path / "c",
                         modules=("video_encoder",))
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "other").write_text("x")
  with pytest.raises(FileExistsError, match="not empty"):
    exported.export_params(pretrain_params, tiny_model(), "pretrain", "reference", tmp_path / "d")
  with pytest.raises(loading.CheckpointError, match="neither a training workdir"):
    loading.load(str(tmp_path / "d"))


def test_partial_export_lists_what_it_lacks(tmp_path):
  sd = source_state_dict(TINY, "audiomae")
  params, report = released.convert_state_dict(sd, TINY, "audiomae")
  out = exported.export_params(params, tiny_model(), "pretrain", "reference", tmp_path / "x",
                             modules=("audio_encoder",))
  description = exported.read_export_config(str(out))
  assert description["left_at_initialisation"] == report["left_at_initialisation"]
  loaded = loading.load(str(out)).params
  assert_trees_equal(loaded, params)


def test_reads_wrapped_and_data_parallel_state_dicts(tmp_path, monkeypatch):
  weights = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
             "b.bias": np.ones(2, np.float16)}
  np.savez(tmp_path / "sd.npz", **{f"module.{k}": v for k, v in weights.items()})
  save_file(weights, str(tmp_path / "sd.safetensors"))
  for name in ("sd.npz", "sd.safetensors"):
    sd = released.read_state_dict(str(tmp_path / name))
    assert sd.keys() == weights.keys() and sd["b.bias"].dtype == np.float32
    np.testing.assert_array_equal(sd["a.weight"], weights["a.weight"])

  class FakeTensor:
    def __init__(self, value):
      self.shape, self.value = value.shape, value

    def detach(self):
      return self

    def cpu(self):
      return self

    def float(self):
      return FakeTensor(self.value.astype(np.float32))

    def numpy(self):
      return self.value

  calls = []
  def load(path, **kwargs):
    calls.append(kwargs)
    return {"epoch": 3, "model": {f"module.{k}": FakeTensor(v) for k, v in weights.items()}}
  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
  sd = released.read_state_dict(str(tmp_path / "model.pth"))
  assert calls == [{"map_location": "cpu", "weights_only": True}]
  assert sd.keys() == weights.keys()
  np.testing.assert_array_equal(sd["a.weight"], weights["a.weight"])
  with pytest.raises(ValueError, match="unknown checkpoint format '.h5'"):
    released.read_state_dict(str(tmp_path / "model.h5"))


def test_pth_without_torch_names_the_install_command(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
  path = tmp_path / "release.pth"
  path.write_bytes(b"not read")
  with pytest.raises(ImportError, match=r'pip install "havic_jax\[torch\]"'):
    released.read_state_dict(str(path))


def run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                        cwd=ROOT)


def test_convert_cli_writes_a_report_and_an_export(tmp_path):
  sd = source_state_dict(TINY, "havic_finetune")
  np.savez(tmp_path / "havic_ft.npz", **sd)
  result = run("-m", "havic_jax.convert", "--source=havic_finetune",
               f"--input={tmp_path / 'havic_ft.npz'}", f"--output={tmp_path / 'out'}",
               "--config=configs/finetune_tiny.py")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "out" / released.REPORT_FILE).read_text())
  accounted_for(report, sd)
  assert f"{len(sd)} keys: {len(report['loaded'])} loaded" in result.stdout
  checkpoint = loading.load(str(tmp_path / "out"))
  cfg, params = checkpoint.model_config, checkpoint.params
  assert cfg == model_config_from(finetune_tiny.get_config().model)  # TINY but its dropout
  expected, _ = reference.from_reference(sd, TINY, "finetune")
  assert_trees_equal(params, expected)
  assert exported.read_export_config(str(tmp_path / "out"))["source"]["converted_from"] == (
      "havic_finetune")
