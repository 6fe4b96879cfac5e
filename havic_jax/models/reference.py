"""Mapping between the released PyTorch state_dicts and our parameter pytrees (spec §10).

Pure NumPy: a state_dict is a ``{key: np.ndarray}`` in PyTorch layout (``Linear.weight`` is
``(out, in)``, conv weights ``(out, in, *kernel)``). Every reference key is either *loaded*
into a parameter, *recomputed* (a fixed sin-cos table our model rebuilds; checked equal), or
*unused by design* (tensors the released forward pass never reads). Anything else — a missing
key, an unexpected key, a wrong shape, a fixed table that differs from the exact one by more than
float32 rounding allows (``havic_jax.models.fixed_tables``) — raises
:class:`ReferenceMappingError` naming the keys.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import numpy as np

from havic_jax.models.config import ModelConfig
from havic_jax.models.fixed_tables import FixedTable
from havic_jax.models.havic_models import havic_params
from havic_jax.models.patches import audio_token_order

Path = Tuple[str, ...]


class ReferenceMappingError(ValueError):
  """A reference state_dict does not match the model: names every offending key."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """One parameter: our path, the reference key, and the layout conversion."""

  path: Path
  key: str
  # (reference value, our shape) -> our value; (our value, reference shape) -> reference value
  # (None for import-only layouts, where several parameters come from one key).
  to_ours: Callable[[np.ndarray, Tuple[int, ...]], np.ndarray]
  to_reference: Optional[Callable[[np.ndarray, Tuple[int, ...]], np.ndarray]]
  # our shape -> the reference's shape
  reference_shape: Callable[[Tuple[int, ...]], Tuple[int, ...]]


def _reshape(x, shape):
  return np.reshape(x, shape)


def _linear_to_ours(w, shape):
  return np.ascontiguousarray(np.reshape(w, (w.shape[0], -1)).T).reshape(shape)


def _linear_to_reference(k, shape):
  return np.ascontiguousarray(k.T).reshape(shape)


def _permute_rows(order: np.ndarray):
  """Conversions for a [1, N, D] table stored mel-major when our tokens use ``order``."""
  inverse = np.argsort(order)
  return (lambda x, shape: np.reshape(x, shape)[order],
          lambda p, shape: p[inverse].reshape(shape))


def _leading_ones(n: int):
  return lambda shape: (1,) * n + tuple(shape)


@dataclasses.dataclass
class Rules:
  """Collects rules for one model; helpers mirror the reference's module layout."""

  rules: List[Rule] = dataclasses.field(default_factory=list)
  fixed: Dict[str, FixedTable] = dataclasses.field(default_factory=dict)
  unused: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def fixed_values(self) -> Dict[str, np.ndarray]:
    """The fixed tables as a state_dict stores them (float32)."""
    return {key: table.values for key, table in self.fixed.items()}

  def copy(self, path: Path, key: str, leading_ones: int = 0):
    """Same values; the reference adds ``leading_ones`` unit axes ([1, 1, D] tokens...)."""
    self.rules.append(Rule(path, key, _reshape, _reshape, _leading_ones(leading_ones)))

  def rows(self, path: Path, key: str, order: np.ndarray):
    self.rules.append(Rule(path, key, *_permute_rows(order), _leading_ones(1)))

  def linear(self, path: Path, key: str, bias: bool = True, kernel: Tuple[int, ...] = ()):
    """Linear (or conv with in-channels/kernel ``kernel``) weight (out, in...) <-> (in, out)."""
    shape = lambda s: (s[1],) + (tuple(kernel) or (s[0],))
    self.rules.append(Rule(path + ("kernel",), key + ".weight", _linear_to_ours,
                           _linear_to_reference, shape))
    if bias:
      self.copy(path + ("bias",), key + ".bias")

  def norm(self, path: Path, key: str):
    self.copy(path + ("scale",), key + ".weight")
    self.copy(path + ("bias",), key + ".bias")

  def qv_bias_block(self, path: Path, key: str, mlp_names: Tuple[str, str]):
    self.norm(path + ("norm1",), key + ".norm1")
    self.linear(path + ("attn", "qkv"), key + ".attn.qkv", bias=False)
    self.copy(path + ("attn", "q_bias"), key + ".attn.q_bias")
    self.copy(path + ("attn", "v_bias"), key + ".attn.v_bias")
    self.linear(path + ("attn", "proj"), key + ".attn.proj")
    self.norm(path + ("norm2",), key + ".norm2")
    self.linear(path + ("mlp", "fc1"), f"{key}.mlp.{mlp_names[0]}")
    self.linear(path + ("mlp", "fc2"), f"{key}.mlp.{mlp_names[1]}")

  def mlp_unit(self, path: Path, key: str):
    self.linear(path + ("mlp", "fc1"), key + ".mlp.fc1")
    self.linear(path + ("mlp", "fc2"), key + ".mlp.fc2")


def _table_1d(n: int, width: int) -> FixedTable:
  return FixedTable((n,), width)


def _table_2d(model_config: ModelConfig, width: int) -> FixedTable:
  return FixedTable((model_config.audio_mel_tokens, model_config.audio_time_tokens), width)


VIDEO_MLP = ("layers.0.linear", "layers.1.linear")
TIMM_MLP = ("fc1", "fc2")


def _encoders(r: Rules, model_config: ModelConfig):
  d = model_config.width
  ve, ae = ("video_encoder",), ("audio_encoder",)
  r.linear(ve + ("patch_embed",), "visual_encoder.patch_embedding.projection",
           kernel=(3, model_config.tubelet_size, model_config.patch_size, model_config.patch_size))
  r.copy(ve + ("segment_tokens",), "visual_encoder.cls_tokens", 1)
  r.norm(ve + ("norm",), "visual_encoder.norm")
  r.fixed["visual_encoder.cls_pos_embed"] = _table_1d(model_config.num_segments, d)
  r.fixed["visual_encoder.pos_embedding.emb"] = _table_1d(model_config.video_tokens, d)
  r.linear(ae + ("patch_embed",), "audio_encoder.patch_embed.proj",
           kernel=(1, model_config.audio_patch_size, model_config.audio_patch_size))
  r.rows(ae + ("pos_embed",), "audio_encoder.pos_embed", audio_token_order(model_config))
  r.copy(ae + ("modality",), "audio_encoder.modality", 2)
  r.copy(ae + ("segment_tokens",), "audio_encoder.cls_tokens", 1)
  r.norm(ae + ("norm",), "audio_encoder.norm")
  r.unused["audio_encoder.cls_pos_embed"] = _table_1d(model_config.num_segments, d).values
  for i in range(model_config.depth):
    r.qv_bias_block(ve + (f"block_{i}",), f"visual_encoder.blocks.{i}", VIDEO_MLP)
    r.qv_bias_block(ae + (f"block_{i}",), f"audio_encoder.blocks.{i}", TIMM_MLP)


def _interaction(r: Rules, model_config: ModelConfig):
  d, p = model_config.width, ("interaction",)
  prefix = "AudioVisualInteractionModule"
  for ours, theirs in (("video_from_audio", "cross_attn_audio_to_video"),
                       ("audio_from_video", "cross_attn_video_to_audio")):
    key = f"{prefix}.blocks.0.{theirs}"
    for norm in ("norm_q", "norm_k", "norm2"):
      r.norm(p + (ours, norm), f"{key}.{norm}")
    for proj, ref in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "proj")):
      r.linear(p + (ours, proj), f"{key}.{ref}")
    r.mlp_unit(p + (ours,), key)
  r.norm(p + ("video_out_norm",), f"{prefix}.norm_video_out")
  r.norm(p + ("audio_out_norm",), f"{prefix}.norm_audio_out")
  # Held and run by the released module, whose forward pass discards their outputs (spec §10).
  for stream in ("self_attn_video", "self_attn_audio"):
    key = f"{prefix}.blocks.0.{stream}"
    hidden = int(d * model_config.mlp_ratio)
    for name, shape in (("norm1.weight", (d,)), ("norm1.bias", (d,)),
                        ("attn.qkv.weight", (3 * d, d)), ("attn.qkv.bias", (3 * d,)),
                        ("attn.proj.weight", (d, d)), ("attn.proj.bias", (d,)),
                        ("norm2.weight", (d,)), ("norm2.bias", (d,)),
                        ("mlp.fc1.weight", (hidden, d)), ("mlp.fc1.bias", (hidden,)),
                        ("mlp.fc2.weight", (d, hidden)), ("mlp.fc2.bias", (d,))):
      r.unused[f"{key}.{name}"] = np.zeros(shape, np.float32)
  for name in ("audio_mask_token", "audio_modality", "visual_mask_token"):
    r.unused[f"{prefix}.{name}"] = np.zeros((1, 1, d), np.float32)
  r.unused[f"{prefix}.audio_pos_embed"] = _table_2d(model_config, d).values
  r.unused[f"{prefix}.visual_pos_embedding.emb"] = _table_1d(model_config.video_tokens, d).values


def _decoders(r: Rules, model_config: ModelConfig):
  dw = model_config.decoder_width
  last = model_config.decoder_depth - 1
  for ours, theirs in (("video_decoder", "visual_decoder"), ("audio_decoder", "audio_decoder")):
    p, is_video = (ours,), ours == "video_decoder"
    r.linear(p + ("embed",), f"{theirs}.enc_dec_proj" if is_video else f"{theirs}.decoder_embed",
             bias=False)
    r.copy(p + ("mask_token",), f"{theirs}.mask_token", 2)
    r.norm(p + ("norm",), f"{theirs}.norm" if is_video else f"{theirs}.decoder_norm")
    if is_video:
      r.fixed[f"{theirs}.pos_embedding.emb"] = _table_1d(model_config.video_tokens, dw)
    else:
      r.copy(p + ("modality",), f"{theirs}.decoder_modality", 2)
      r.fixed[f"{theirs}.decoder_pos_embed"] = _table_2d(model_config, dw)
    for layer in model_config.tap_layers:
      key = f"{theirs}.HiA_{layer}"
      r.linear(p + (f"hia_{layer}", "encoder_proj"), f"{key}.encoder2decoder")
      for proj, ref in (("q", "query_proj"), ("k", "key_proj"), ("v", "value_proj")):
        r.linear(p + (f"hia_{layer}", proj), f"{key}.{ref}")
      for norm in ("norm_q", "norm_k", "out_norm"):
        r.norm(p + (f"hia_{layer}", norm), f"{key}.{norm}")
    for b in range(model_config.decoder_depth):
      r.qv_bias_block(p + (f"block_{b}",), f"{theirs}.blocks.{b}",
                      VIDEO_MLP if is_video else TIMM_MLP)
      suffix = "" if b == last else f"_{b + 1}"
      r.linear(p + (f"head_{b}",), f"{theirs}.head{suffix}" if is_video
               else f"{theirs}.decoder_pred{suffix}")


def _cross_modal(r: Rules, model_config: ModelConfig):
  d = model_config.width
  for ours, theirs, stream in (("a2v", "A2V", "audio"), ("v2a", "V2A", "visual")):
    p = (ours,)
    r.copy(p + ("mask_token",), f"{theirs}.{stream}_mask_token", 2)
    if ours == "a2v":
      r.copy(p + ("modality",), f"{theirs}.audio_modality", 2)
      r.fixed[f"{theirs}.audio_pos_embed"] = _table_2d(model_config, d)
    else:
      r.fixed[f"{theirs}.visual_pos_embedding.emb"] = _table_1d(model_config.video_tokens, d)
    r.linear(p + ("token_map",), f"{theirs}.TokenAligner.output_layer")
    r.norm(p + ("block", "norm1"), f"{theirs}.block.norm1")
    r.linear(p + ("block", "attn", "qkv"), f"{theirs}.block.attn.qkv")
    r.linear(p + ("block", "attn", "proj"), f"{theirs}.block.attn.proj")
    r.norm(p + ("block", "norm2"), f"{theirs}.block.norm2")
    r.mlp_unit(p + ("block",), f"{theirs}.block")
    r.norm(p + ("norm",), f"{theirs}.norm")


def _classifier(r: Rules, model_config: ModelConfig):
  for i, layer in enumerate(model_config.tap_layers):
    for ours, theirs in (("video", "Visual"), ("audio", "Audio")):
      r.linear((f"{ours}_reducers_{i}", "hidden"), f"{theirs}TokenReducer_{layer}.mlp.0")
      r.linear((f"{ours}_reducers_{i}", "score"), f"{theirs}TokenReducer_{layer}.mlp.2")
  for ours, theirs in (("video", "Visual"), ("audio", "Audio")):
    r.linear((f"{ours}_inter_reducer", "hidden"), f"{theirs}TokenReducer_AVI.mlp.0")
    r.linear((f"{ours}_inter_reducer", "score"), f"{theirs}TokenReducer_AVI.mlp.2")
  r.copy(("video_pool", "weights"), "pool_v.weights")
  r.copy(("audio_pool", "weights"), "pool_a.weights")
  for ours, theirs in (("classifier", "classifier"), ("audio_classifier", "classifier_audio"),
                       ("video_classifier", "classifier_visual")):
    for i in range(len(model_config.classifier_hidden)):
      r.linear((ours, f"hidden_{i}"), f"{theirs}.layers.{i}")
    r.linear((ours, "out"), f"{theirs}.output_layer")


def reference_rules(model_config: ModelConfig, kind: str) -> Rules:
  """All rules, fixed tables and unused tensors (in the reference's shapes) of the ``kind``
  model ("pretrain" or "finetune")."""
  r = Rules()
  _encoders(r, model_config)
  _interaction(r, model_config)
  if kind == "pretrain":
    _decoders(r, model_config)
    _cross_modal(r, model_config)
  else:
    _classifier(r, model_config)
  return r


@functools.lru_cache(maxsize=8)
def param_shapes(model_config: ModelConfig, kind: str) -> Dict[Path, Tuple[int, ...]]:
  """Our parameter shapes by path (tuple of names) for this config and model kind, the same
  inside or outside a device mesh and its sharding rules."""
  with jax.set_mesh(None), nn.logical_axis_rules(()):
    params = nn.unbox(havic_params(model_config, kind))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def state_dict_shapes(r: Rules, shapes: Mapping[Path, Tuple[int, ...]]
                      ) -> Dict[str, Tuple[int, ...]]:
  """The shape of every key the rules ``r`` name, given our parameter ``shapes``."""
  out = {rule.key: rule.reference_shape(shapes[rule.path]) for rule in r.rules}
  out.update({k: v.shape for k, v in {**r.fixed_values(), **r.unused}.items()})
  return out


def reference_shapes(model_config: ModelConfig, kind: str) -> Dict[str, Tuple[int, ...]]:
  """The shape of every key of the release's state_dict for this config and model kind."""
  return state_dict_shapes(reference_rules(model_config, kind), param_shapes(model_config, kind))


def _unflatten(flat: Mapping[Path, np.ndarray]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return tree


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[Tuple[Path, Any]]:
  for name, value in tree.items():
    if isinstance(value, Mapping):
      yield from _flatten(value, prefix + (name,))
    else:
      yield prefix + (name,), value


def apply_rules(state_dict: Mapping[str, np.ndarray], r: Rules,
                shapes: Mapping[Path, Tuple[int, ...]], description: str
                ) -> Tuple[Dict[str, Any], Dict[str, List[str]]]:
  """Converts ``state_dict`` with the rules ``r`` into the parameters they name (all of our
  model or a part of it; ``shapes`` are the model's parameter shapes by path).

  Returns ``(params, report)`` as :func:`from_reference`. Raises
  :class:`ReferenceMappingError`, starting with ``description``, naming missing, unexpected,
  mis-shaped or differing keys.
  """
  unknown = sorted({rule.path for rule in r.rules} - set(shapes))
  if unknown:
    raise ReferenceMappingError(f"rules name parameters the model lacks: {unknown}")  # a bug
  known = {rule.key for rule in r.rules} | set(r.fixed) | set(r.unused)
  missing = sorted(k for k in known - set(r.unused) if k not in state_dict)
  unexpected = sorted(set(state_dict) - known)
  problems = []
  if missing:
    problems.append(f"missing keys: {missing}")
  if unexpected:
    problems.append(f"unexpected keys: {unexpected}")
  params, wrong_shape = {}, {}
  for rule in r.rules:
    if rule.key not in state_dict:
      continue
    value = np.asarray(state_dict[rule.key], np.float32)
    want = rule.reference_shape(shapes[rule.path])
    if value.shape != want:
      wrong_shape[rule.key] = f"{rule.key}: got {tuple(value.shape)}, expected {want}"
      continue
    params[rule.path] = rule.to_ours(value, shapes[rule.path])
  differing, fixed_tables = [], {}
  for key, table in r.fixed.items():
    if key not in state_dict:
      continue
    value = np.asarray(state_dict[key])
    if value.shape != table.exact.shape:
      wrong_shape[key] = f"{key}: got {tuple(value.shape)}, expected {table.exact.shape}"
      continue
    largest, (position, column) = table.difference(value)
    fixed_tables[key] = {"max_abs_diff": largest, "tolerance": table.tolerance}
    if not largest <= table.tolerance:
      differing.append(f"{key}: largest |difference| {largest:.3g} at position {position}, "
                       f"column {column} (float32 rounding explains up to "
                       f"{table.tolerance:.2g})")
  if wrong_shape:
    problems.append(f"shape mismatches: {list(wrong_shape.values())}")
  if differing:
    problems.append("fixed sin-cos tables that are not the sin-cos tables of this model: "
                    + "; ".join(differing))
  if problems:
    raise ReferenceMappingError(f"{description} does not match the model: "
                                + "; ".join(problems))
  report = {"loaded": list(dict.fromkeys(rule.key for rule in r.rules)),
            "recomputed": sorted(r.fixed),
            "unused": sorted(k for k in r.unused if k in state_dict),
            "fixed_tables": fixed_tables}
  return _unflatten(params), report


def from_reference(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig, kind: str
                   ) -> Tuple[Dict[str, Any], Dict[str, List[str]]]:
  """Converts a reference state_dict to our parameter pytree (nested dict of float32 arrays).

  Returns ``(params, report)``; ``report`` lists the reference keys that were ``loaded``,
  ``recomputed`` (fixed tables, checked against the exact tables within float32 rounding) and
  ``unused`` (by design), and gives each fixed table's largest difference and tolerance
  (``fixed_tables``). Raises :class:`ReferenceMappingError` naming missing, unexpected,
  mis-shaped or differing keys.
  """
  r = reference_rules(model_config, kind)
  shapes = param_shapes(model_config, kind)
  unmapped = sorted(set(shapes) - {rule.path for rule in r.rules})
  if unmapped:
    raise ReferenceMappingError(f"rules do not cover the model: unmapped {unmapped}")  # a bug
  return apply_rules(state_dict, r, shapes, f"reference {kind} state_dict")


def to_reference(params: Mapping[str, Any], model_config: ModelConfig, kind: str
                 ) -> Dict[str, np.ndarray]:
  """Converts our parameters back to a complete reference state_dict (PyTorch layout).

  Fixed tables are filled with their sin-cos values; tensors the reference holds but never
  reads are filled with zeros (or their sin-cos tables), so the release loads it strictly."""
  r = reference_rules(model_config, kind)
  flat = dict(_flatten(params))
  out = {}
  for rule in r.rules:
    value = np.asarray(flat[rule.path], np.float32)
    out[rule.key] = rule.to_reference(value, rule.reference_shape(value.shape))
  out.update(r.fixed_values())
  out.update(r.unused)
  return out
