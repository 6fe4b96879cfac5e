"""Import of PyTorch checkpoints: the HAVIC release and the MARLIN / AudioMAE initialisations.

  python -m havic_jax.convert --source=havic_pretrain --input=FILE.pth --output=DIR \\
      [--config=configs/pretrain_base.py]

Sources (spec §10, §11):
  havic_pretrain, havic_finetune  the released HAVIC models, every module
                                  (``havic_jax.models.reference``);
  marlin     MARLIN ViT-B: ``encoder.*`` -> video_encoder, ``decoder.*`` and ``enc_dec_proj``
             -> video_decoder (HAVIC's video encoder and decoder are MARLIN's plus segment
             tokens, hierarchical attention units and one head per decoder block);
  audiomae   AudioMAE ViT-B: its encoder -> audio_encoder (fused qkv bias split, patch kernel
             transposed to the mel-major layout, CLS row of the position table dropped); its
             decoder is unused by design (HAVIC's audio decoder is another architecture).

Inputs: a PyTorch pickle (``.pth``, ``.pt``, ``.ckpt``, ``.bin``; read with
``torch.load(weights_only=True)``, needs ``pip install "havic_jax[torch]"``), ``.safetensors`` or
``.npz``; the state_dict may sit under ``"model"`` or ``"state_dict"`` and carry DataParallel's
``module.`` prefix. The output directory receives an export (``havic_jax.export``: config.json,
params.safetensors, params/) and ``report.json``: every source key ``loaded``, ``recomputed``
(fixed sin-cos tables, checked against the exact tables within float32 rounding; each table's
largest difference under ``fixed_tables``) or ``unused`` (by design), ``notes`` on layout
changes, and the parameters the source does not provide (``left_at_initialisation``). A missing,
unexpected or mis-shaped key, or a table that is not this model's, is an error that names it.

``python -m havic_jax.eval --checkpoint=FILE`` and ``--config.init_from=FILE`` take such a file
directly (:func:`load_released`: converted in memory, the same checks, nothing written).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from safetensors.numpy import load_file

from havic_jax.errors import UserError
from havic_jax.checkpoints.exported import export_params, leaves_left_out
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.reference import (Rule, Rules, apply_rules, from_reference, param_shapes,
                                        reference_rules, reference_shapes, state_dict_shapes)

REPORT_FILE = "report.json"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
NUMPY_SUFFIX = ".npz"
# Training scripts save {"model": state_dict, ...}; PyTorch Lightning {"state_dict": ...}.
WRAPPER_KEYS = ("model", "state_dict")
DATA_PARALLEL_PREFIX = "module."
TORCH_INSTALL = 'pip install "havic_jax[torch]"'

# The released HAVIC models: source -> model kind.
HAVIC_SOURCES = {"havic_pretrain": "pretrain", "havic_finetune": "finetune"}
# MARLIN and AudioMAE initialise modules of the pretraining model (spec §11).
INIT_STAGE = "pretrain"

# MARLIN's names for HAVIC's video encoder and decoder keys (first matching prefix wins) ...
MARLIN_PREFIXES = (("visual_encoder.", "encoder."),
                   ("visual_decoder.enc_dec_proj.", "enc_dec_proj."),
                   ("visual_decoder.", "decoder."))
# ... except what HAVIC adds: segment tokens and their table, the hierarchical attention units,
# and the heads of the first decoder blocks (MARLIN's one ``head`` follows its last block, as
# HAVIC's unsuffixed ``head`` does).
HAVIC_VIDEO_ADDITIONS = re.compile(r"visual_encoder\.cls_|visual_decoder\.(HiA_\d+|head_\d+)\.")

# HAVIC's audio encoder keys are AudioMAE's under this prefix ...
HAVIC_AUDIO_PREFIX = "audio_encoder."
# ... except HAVIC's additions: segment tokens and the modality vector.
HAVIC_AUDIO_ADDITIONS = ("audio_encoder.cls_tokens", "audio_encoder.modality")
# Thirds of AudioMAE's fused qkv bias (q, k, v) that HAVIC keeps as separate q / v biases.
QKV_BIAS_THIRDS = {"q_bias": 0, "v_bias": 2}
AUDIOMAE_LAYER_NORM_EPS = 1e-6
# AudioMAE's decoder, unused by design: HAVIC's audio decoder (spec §7) starts from its own
# initialisation. Sizes of the released ViT-B model (AudioMAE_vit_base.tsv).
AUDIOMAE_DECODER_WIDTH = 512
AUDIOMAE_DECODER_DEPTH = 16
AUDIOMAE_DECODER_HEADS = 16
AUDIOMAE_DECODER_MLP_RATIO = 4
AUDIOMAE_POSITION_BIAS_HIDDEN = 384  # the MLP of its windowed attention's relative position bias


class TorchMissingError(UserError, ImportError):
  """Reading a PyTorch pickle without PyTorch installed."""


class LayoutError(UserError):
  """A state_dict file of another model, or of a release the caller does not take."""


# --------------------------------------------------------------------------------------------
# Reading state_dicts
# --------------------------------------------------------------------------------------------
def _torch_load(path: str) -> Mapping[str, Any]:
  """A PyTorch checkpoint, tensors only (``weights_only=True``: no arbitrary unpickling)."""
  try:
    import torch
  except ImportError as error:
    raise TorchMissingError(
        f"{path} is a PyTorch checkpoint and reading it needs PyTorch: {TORCH_INSTALL} (or save "
        f"its state_dict as {SAFETENSORS_SUFFIX} / {NUMPY_SUFFIX} elsewhere)") from error
  return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{key: float32 array} in PyTorch layout from a ``.pth``-like, ``.safetensors`` or ``.npz``
  file; unwraps ``{"model": ...}`` / ``{"state_dict": ...}`` and strips ``module.``."""
  suffix = pathlib.Path(path).suffix
  if suffix in TORCH_SUFFIXES:
    tree = _torch_load(path)
  elif suffix == SAFETENSORS_SUFFIX:
    tree = load_file(path)
  elif suffix == NUMPY_SUFFIX:
    with np.load(path, allow_pickle=False) as archive:
      tree = dict(archive)
  else:
    raise ValueError(f"{path}: unknown checkpoint format {suffix!r}; expected one of "
                     f"{TORCH_SUFFIXES + (SAFETENSORS_SUFFIX, NUMPY_SUFFIX)}")
  for wrapper in WRAPPER_KEYS:
    if isinstance(tree.get(wrapper), Mapping):
      tree = tree[wrapper]
      break
  not_arrays = sorted(k for k, v in tree.items() if not hasattr(v, "shape"))
  if not_arrays:
    raise ValueError(f"{path}: not a state_dict; {not_arrays} are not tensors (expected a flat "
                     f"state_dict, or one under {' / '.join(WRAPPER_KEYS)})")
  return {key.removeprefix(DATA_PARALLEL_PREFIX): _to_numpy(value)
          for key, value in tree.items()}


def _to_numpy(value: Any) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value.astype(np.float32, copy=False)
  return value.detach().cpu().float().numpy()  # a torch.Tensor (float16 / bfloat16 included)


# --------------------------------------------------------------------------------------------
# MARLIN and AudioMAE: HAVIC's encoder rules under their names and layouts
# --------------------------------------------------------------------------------------------
def _marlin_key(havic_key: str) -> Optional[str]:
  """MARLIN's name for a HAVIC key, or None where MARLIN has no such tensor."""
  if HAVIC_VIDEO_ADDITIONS.match(havic_key):
    return None
  for havic_prefix, marlin_prefix in MARLIN_PREFIXES:
    if havic_key.startswith(havic_prefix):
      return marlin_prefix + havic_key[len(havic_prefix):]
  return None


def marlin_rules(model_config: ModelConfig) -> Rules:
  """HAVIC's video encoder and decoder rules (same layouts) under MARLIN's key names."""
  havic = reference_rules(model_config, INIT_STAGE)
  r = Rules()
  r.rules = [dataclasses.replace(rule, key=key) for rule in havic.rules
             if (key := _marlin_key(rule.key))]
  r.fixed = {key: table for havic_key, table in havic.fixed.items()
             if (key := _marlin_key(havic_key))}
  return r


def _audiomae_rule(rule: Rule, model_config: ModelConfig) -> Rule:
  """HAVIC's audio-encoder ``rule`` for AudioMAE's key and layout (import only)."""
  key = rule.key[len(HAVIC_AUDIO_PREFIX):]
  name = key.rsplit(".", 1)[-1]
  if key == "patch_embed.proj.weight":
    # [D, 1, time, mel]: AudioMAE patches [1024 time, 128 mel] fbanks; HAVIC's kernel is
    # [D, 1, mel, time] (it patches the transposed fbank, spec §2).
    return Rule(rule.path, key, lambda w, shape: rule.to_ours(np.swapaxes(w, -1, -2), shape),
                None, rule.reference_shape)
  if key == "pos_embed":
    # [1, 1 + N, D]: a CLS row, then AudioMAE's time-major grid (row 1 + t·F + f); HAVIC's table
    # is mel-major (row f·T + t).
    def to_ours(table, shape):
      grid = table[0, 1:].reshape(model_config.audio_time_tokens, model_config.audio_mel_tokens, -1)
      return rule.to_ours(np.swapaxes(grid, 0, 1)[None], shape)
    return Rule(rule.path, key, to_ours, None, lambda s: (1, 1 + s[0], s[1]))
  if name in QKV_BIAS_THIRDS:
    third = QKV_BIAS_THIRDS[name]
    return Rule(rule.path, key.removesuffix(name) + "qkv.bias",
                lambda b, shape: b[third * shape[0]:(third + 1) * shape[0]], None,
                lambda s: (3 * s[0],))
  return dataclasses.replace(rule, key=key)


def _audiomae_decoder(model_config: ModelConfig) -> Dict[str, np.ndarray]:
  """AudioMAE's decoder tensors (zeros of their shapes) and its mask token."""
  w, heads, hidden = AUDIOMAE_DECODER_WIDTH, AUDIOMAE_DECODER_HEADS, AUDIOMAE_POSITION_BIAS_HIDDEN
  mlp = AUDIOMAE_DECODER_MLP_RATIO * w
  shapes = {"mask_token": (1, 1, w), "decoder_pos_embed": (1, 1 + model_config.audio_tokens, w),
            "decoder_embed.weight": (w, model_config.width), "decoder_embed.bias": (w,),
            "decoder_norm.weight": (w,), "decoder_norm.bias": (w,),
            "decoder_pred.weight": (model_config.audio_patch_dim, w),
            "decoder_pred.bias": (model_config.audio_patch_dim,)}
  for b in range(AUDIOMAE_DECODER_DEPTH):
    for name, shape in (("attn.tau", (heads,)),
                        ("attn.qkv.weight", (3 * w, w)), ("attn.qkv.bias", (3 * w,)),
                        ("attn.proj.weight", (w, w)), ("attn.proj.bias", (w,)),
                        ("attn.meta_mlp.fc1.weight", (hidden, 2)),
                        ("attn.meta_mlp.fc1.bias", (hidden,)),
                        ("attn.meta_mlp.fc2.weight", (heads, hidden)),
                        ("attn.meta_mlp.fc2.bias", (heads,)),
                        ("norm1.weight", (w,)), ("norm1.bias", (w,)),
                        ("mlp.fc1.weight", (mlp, w)), ("mlp.fc1.bias", (mlp,)),
                        ("mlp.fc2.weight", (w, mlp)), ("mlp.fc2.bias", (w,)),
                        ("norm2.weight", (w,)), ("norm2.bias", (w,))):
      shapes[f"decoder_blocks.{b}.{name}"] = shape
  return {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}


def audiomae_rules(model_config: ModelConfig) -> Rules:
  """HAVIC's audio-encoder rules under AudioMAE's names and layouts; AudioMAE's CLS token and
  decoder are unused by design."""
  r = Rules()
  r.rules = [
      _audiomae_rule(rule, model_config)
      for rule in reference_rules(model_config, INIT_STAGE).rules
      if rule.key.startswith(HAVIC_AUDIO_PREFIX) and rule.key not in HAVIC_AUDIO_ADDITIONS
  ]
  r.unused["cls_token"] = np.zeros((1, 1, model_config.width), np.float32)  # HAVIC: segment tokens
  r.unused.update(_audiomae_decoder(model_config))
  return r


INIT_SOURCES: Dict[str, Callable[[ModelConfig], Rules]] = {"marlin": marlin_rules,
                                                           "audiomae": audiomae_rules}
SOURCES = (*HAVIC_SOURCES, *INIT_SOURCES)


def source_stage(source: str) -> str:
  """The model ("pretrain" / "finetune") whose parameters ``source`` provides."""
  return HAVIC_SOURCES.get(source, INIT_STAGE)


def source_shapes(model_config: ModelConfig, source: str) -> Dict[str, Tuple[int, ...]]:
  """The shape of every key the ``source`` state_dict holds for this config."""
  if source in HAVIC_SOURCES:
    return reference_shapes(model_config, HAVIC_SOURCES[source])
  return state_dict_shapes(INIT_SOURCES[source](model_config),
                           param_shapes(model_config, INIT_STAGE))


def _notes(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig,
           source: str) -> List[str]:
  """What the conversion changed beyond renaming and transposing Linear weights."""
  if source == "marlin":
    last = model_config.decoder_depth - 1
    return [f"decoder.head.*: MARLIN's one reconstruction head (after its last block) -> "
            f"video_decoder/head_{last}; the other blocks' heads keep their initialisation"]
  if source != "audiomae":
    return []
  d, p = model_config.width, model_config.audio_patch_size
  k_bias = {key: float(np.max(np.abs(state_dict[key][d:2 * d])))
            for key in (f"blocks.{i}.attn.qkv.bias" for i in range(model_config.depth))}
  largest = max(k_bias, key=k_bias.get)
  return [
      f"blocks.*.attn.qkv.bias: q_bias = [:{d}], v_bias = [{2 * d}:]; the k bias [{d}:{2 * d}] "
      f"is dropped (largest |value| {k_bias[largest]:.3g}, in {largest}): it adds the same q·b_k "
      f"to every logit of a query's row, which the softmax ignores",
      f"patch_embed.proj.weight: the {p}x{p} kernel is transposed from AudioMAE's (time, mel) to "
      "HAVIC's mel-major (mel, time) layout",
      "pos_embed: the CLS row is dropped and the rows are moved from AudioMAE's time-major grid "
      "to our token order; loaded into the learnable audio_encoder/pos_embed",
      f"LayerNorm epsilon: AudioMAE used {AUDIOMAE_LAYER_NORM_EPS:g}, this model "
      f"{model_config.layer_norm_eps:g}; scales and biases are loaded unchanged",
  ]


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig, source: str
                       ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(parameters, report) of a ``source`` state_dict (PyTorch layout) for this config.

  The parameters are the whole model for HAVIC sources and the covered modules otherwise (a
  MARLIN or AudioMAE import lacks HAVIC's additions; the report lists them under
  ``left_at_initialisation``). Raises ``ReferenceMappingError`` naming missing, unexpected or
  mis-shaped keys."""
  if source in HAVIC_SOURCES:
    params, report = from_reference(state_dict, model_config, HAVIC_SOURCES[source])
  elif source in INIT_SOURCES:
    params, report = apply_rules(state_dict, INIT_SOURCES[source](model_config),
                                 param_shapes(model_config, INIT_STAGE), f"{source} state_dict")
  else:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  report["notes"] = _notes(state_dict, model_config, source)
  report["left_at_initialisation"] = leaves_left_out(params, model_config, source_stage(source))
  return params, report


# Released checkpoints are the paper's base model in the release's layout (``ModelConfig``'s
# defaults with the reference token order).
RELEASE_COMPAT = "reference"
RELEASED_SUFFIXES = TORCH_SUFFIXES + (SAFETENSORS_SUFFIX, NUMPY_SUFFIX)
# How many of a file's keys an unrecognised-layout error quotes.
KEYS_QUOTED = 8


class Released(NamedTuple):
  """A released checkpoint converted in memory: its ``source`` (``SOURCES``), the model config
  and stage its parameters belong to, the parameters (per-layer layout) and the key report."""

  source: str
  model_config: ModelConfig
  stage: str
  params: Dict[str, Any]
  report: Dict[str, Any]


def is_released_file(path: str) -> bool:
  """Whether ``path`` names a state_dict file (rather than a workdir or export directory)."""
  return pathlib.Path(path).suffix in RELEASED_SUFFIXES and not pathlib.Path(path).is_dir()


def detect_source(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig,
                  path: str) -> str:
  """The source (``SOURCES``) whose layout for ``model_config`` holds the most of
  ``state_dict``'s keys (ties: the one of which the file holds the most). Raises
  :class:`LayoutError` naming the file's keys when no layout holds at least half of them."""
  keys = set(state_dict)
  scores = {}
  for source in SOURCES:
    layout = set(source_shapes(model_config, source))
    shared = len(keys & layout)
    scores[source] = (shared / max(len(keys), 1), shared / len(layout))
  best = max(scores, key=scores.get)
  if scores[best][0] < 0.5:
    examples = {source: next(iter(source_shapes(model_config, source))) for source in SOURCES}
    raise LayoutError(
        f"{path}: neither a HAVIC (pretraining / fine-tuning), MARLIN nor AudioMAE state_dict: "
        f"its keys {sorted(keys)[:KEYS_QUOTED]}{' ...' if len(keys) > KEYS_QUOTED else ''} "
        f"({len(keys)} in all) match at most {scores[best][0]:.0%} of a layout's (best: "
        f"{best}); the layouts start with " + ", ".join(f"{k!r} ({s})" for s, k in
                                                        examples.items()))
  return best


def load_released(path: str, model_config: Optional[ModelConfig] = None,
                  sources: Sequence[str] = SOURCES) -> Released:
  """Reads and converts the released state_dict file ``path`` in memory for ``model_config``
  (default: the base model), detecting which release it is; it must be one of ``sources``. Raises
  :class:`LayoutError` for another layout and ``ReferenceMappingError`` naming missing, unexpected,
  mis-shaped or differing keys."""
  state_dict = read_state_dict(path)
  model_config = model_config or model_config_from({}, RELEASE_COMPAT)
  source = detect_source(state_dict, model_config, path)
  if source not in sources:
    raise LayoutError(f"{path}: a {source} state_dict; this needs one of {list(sources)}")
  params, report = convert_state_dict(state_dict, model_config, source)
  return Released(source, model_config, source_stage(source), params,
                  {"converted_from": source, "input": os.path.abspath(path),
                   "modules": list(params), **report})


def convert(source: str, input_path: str, output_dir: str,
            model: Mapping[str, Any], compat: str) -> Dict[str, Any]:
  """Reads ``input_path``, converts it for the model sizes ``model`` (``config.model``) and
  ``compat``, writes an export of every module it provides and ``report.json`` to
  ``output_dir``; returns the report."""
  model_config = model_config_from(model, compat)
  params, report = convert_state_dict(read_state_dict(input_path), model_config, source)
  origin = {"converted_from": source, "input": os.path.abspath(input_path)}
  directory = export_params(params, model, source_stage(source), compat, output_dir,
                            modules=tuple(params), source=origin)
  report = {**origin, "modules": list(params), **report}
  (directory / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
  return report


def summary(report: Mapping[str, Any], output_dir: Optional[str] = None) -> str:
  """What a conversion ``report`` says, in a few lines (``output_dir``: where it was written)."""
  counts = {status: len(report[status]) for status in ("loaded", "recomputed", "unused")}
  tables = report["fixed_tables"]
  worst = max(tables, key=lambda key: tables[key]["max_abs_diff"]) if tables else None
  lines = [f"{report['converted_from']}: {sum(counts.values())} keys: {counts['loaded']} loaded, "
           f"{counts['recomputed']} recomputed (fixed sin-cos tables, within float32 rounding "
           f"of the exact ones"
           + (f"; largest difference {tables[worst]['max_abs_diff']:.2g} in {worst})"
              if worst else ")")
           + f", {counts['unused']} unused by design",
           f"modules {', '.join(report['modules'])}; "
           f"{len(report['left_at_initialisation'])} parameter tensors left at initialisation",
           *(f"note: {note}" for note in report["notes"])]
  if output_dir:
    lines.append(f"-> {output_dir} ({REPORT_FILE} lists every key)")
  return "\n".join(lines)
