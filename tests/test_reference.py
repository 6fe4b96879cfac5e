"""Reference key mapping: coverage of the release's key lists, layouts, and clear errors."""

import numpy as np
import pytest

from configs.tiny import tiny_model
from havic_jax.models import reference
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.summary import reconciliation
from reference_weights import golden_value, read_key_shapes

TINY = model_config_from(tiny_model())


def reference_state_dict(cfg, kind):
  """Random values for every key, fixed and unused tables at their sin-cos values."""
  rules = reference.reference_rules(cfg, kind)
  out = {k: golden_value(k, shape) for k, shape in reference.reference_shapes(cfg, kind).items()}
  out.update(rules.fixed_values())
  out.update(rules.unused)
  return out


@pytest.mark.parametrize("kind,name,total", [("pretrain", "HAVIC_PT", 243_127_940),
                                             ("finetune", "HAVIC_FT", 214_663_189)])
def test_base_mapping_covers_release_key_list(kind, name, total):
  cfg = ModelConfig()
  rules = reference.reference_rules(cfg, kind)
  keys = {r.key for r in rules.rules} | set(rules.fixed) | set(rules.unused)
  release = read_key_shapes(name)
  assert keys == set(release)
  # Every reference shape our rules produce is the release's shape.
  assert reference.reference_shapes(cfg, kind) == release
  assert sum(int(np.prod(s)) for s in release.values()) == total
  counts = reconciliation(cfg, kind)
  assert counts["reference_total"] == total
  assert counts["trainable"] == {"pretrain": 223_739_780, "finetune": 197_671_189}[kind]
  assert counts["fixed_tables"] == {"pretrain": 3_606_528, "finetune": 1_210_368}[kind]
  assert counts["unused"] == 15_781_632


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
@pytest.mark.parametrize("segments", ["frequency_bands", "time"])
def test_round_trip_and_layouts(kind, segments):
  cfg = model_config_from({**tiny_model(), "audio_segments": segments})
  sd = reference_state_dict(cfg, kind)
  params, report = reference.from_reference(sd, cfg, kind)
  assert len(report["loaded"]) + len(report["recomputed"]) + len(report["unused"]) == len(sd)
  back = reference.to_reference(params, cfg, kind)
  for key in report["loaded"]:
    np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
  # Linear weights are transposed; q/v biases stay separate; qkv has no k bias.
  w = sd["visual_encoder.blocks.0.attn.proj.weight"]
  np.testing.assert_array_equal(params["video_encoder"]["block_0"]["attn"]["proj"]["kernel"],
                                w.T)
  np.testing.assert_array_equal(params["audio_encoder"]["block_1"]["attn"]["v_bias"],
                                sd["audio_encoder.blocks.1.attn.v_bias"])
  assert "bias" not in params["audio_encoder"]["block_1"]["attn"]["qkv"]
  # Conv kernels flatten as (c, pt, ph, pw), matching our patch layout.
  conv = sd["visual_encoder.patch_embedding.projection.weight"]
  np.testing.assert_array_equal(params["video_encoder"]["patch_embed"]["kernel"][5],
                                conv.reshape(conv.shape[0], -1)[:, 5])
  # The learnable audio position table follows our token order.
  pos = sd["audio_encoder.pos_embed"][0]
  ours = params["audio_encoder"]["pos_embed"]
  if segments == "time":
    f, t = 3, 5  # mel band 3, time step 5
    np.testing.assert_array_equal(ours[t * cfg.audio_mel_tokens + f],
                                  pos[f * cfg.audio_time_tokens + t])
  else:
    np.testing.assert_array_equal(ours, pos)


def test_errors_name_the_offending_keys():
  sd = reference_state_dict(TINY, "pretrain")
  missing = dict(sd)
  del missing["A2V.norm.weight"]
  with pytest.raises(reference.ReferenceMappingError, match=r"missing keys: \['A2V.norm.weight'\]"):
    reference.from_reference(missing, TINY, "pretrain")
  extra = dict(sd, **{"visual_encoder.extra_head.weight": np.zeros(3, np.float32)})
  with pytest.raises(reference.ReferenceMappingError, match="unexpected keys.*extra_head"):
    reference.from_reference(extra, TINY, "pretrain")
  wrong = dict(sd, **{"V2A.norm.bias": np.zeros(7, np.float32)})
  with pytest.raises(reference.ReferenceMappingError, match=r"V2A.norm.bias: got \(7,\)"):
    reference.from_reference(wrong, TINY, "pretrain")
  table = dict(sd)
  table["visual_encoder.pos_embedding.emb"] = table["visual_encoder.pos_embedding.emb"] + 1e-3
  with pytest.raises(reference.ReferenceMappingError, match="visual_encoder.pos_embedding.emb"):
    reference.from_reference(table, TINY, "pretrain")
  # A fine-tuning checkpoint is not a pretraining one: decoders missing, heads unexpected.
  with pytest.raises(reference.ReferenceMappingError, match="missing keys.*unexpected keys"):
    reference.from_reference(reference_state_dict(TINY, "finetune"), TINY, "pretrain")


def test_unused_keys_are_optional():
  sd = reference_state_dict(TINY, "pretrain")
  rules = reference.reference_rules(TINY, "pretrain")
  trimmed = {k: v for k, v in sd.items() if k not in rules.unused}
  _, report = reference.from_reference(trimmed, TINY, "pretrain")
  assert report["unused"] == []
