"""Static model hyper-parameters (hashable, so Flax modules can hold them).

The sizes come from the config (``config.model``, built into a :class:`ModelConfig` with
:func:`model_config_from`); the field defaults are the paper's base model (spec §1–§9), the
same values as the configs' base size, and fill the fields that a config.json or export written
before a field existed lacks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from havic_jax.models.attention import IMPLEMENTATIONS

# compat="reference" reproduces the released code; "paper" turns on the paper's intent.
COMPATS = ("reference", "paper")
AUDIO_SEGMENT_MODES = ("frequency_bands", "time")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes and switches of the HAVIC pretraining and fine-tuning models."""

  # Video input (spec §1-§2): [B, num_frames, image_size, image_size, 3] in [0, 1].
  num_frames: int = 16
  image_size: int = 224
  patch_size: int = 16
  tubelet_size: int = 2
  # Audio input: normalised fbank [B, audio_frames, mel_bins].
  audio_frames: int = 1024
  mel_bins: int = 128
  audio_patch_size: int = 16
  # Temporal segments T per stream (spec §2).
  num_segments: int = 8
  audio_segments: str = "frequency_bands"
  # Encoders (spec §4).
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  tap_layers: Tuple[int, ...] = (3, 6, 9, 12)
  video_drop_path: float = 0.1
  audio_drop_path: float = 0.0
  layer_norm_eps: float = 1e-5
  # Audio-visual interaction module (spec §6).
  interaction_heads: int = 8
  # Hierarchical reconstruction decoders (spec §7).
  decoder_width: int = 384
  decoder_depth: int = 4
  decoder_heads: int = 6
  video_decoder_drop_path: float = 0.1
  audio_decoder_drop_path: float = 0.0
  # Cross-modal semantic decoders (spec §7).
  cross_decoder_heads: int = 12
  # Fine-tuning heads (spec §9).
  reducer_hidden: int = 128
  classifier_hidden: Tuple[int, ...] = (1536, 768)
  classifier_dropout: Tuple[float, ...] = (0.1, 0.2)
  # Numerics, memory and compilation.
  dtype: str = "float32"
  attention_impl: str = "auto"  # attention.IMPLEMENTATIONS
  remat: bool = False
  remat_policy: str = "nothing_saveable"  # a jax.checkpoint_policies name, used when remat
  scan_layers: bool = False  # encoder blocks between taps as one nn.scan (models.stacking)

  def __post_init__(self):
    if self.audio_segments not in AUDIO_SEGMENT_MODES:
      raise ValueError(
          f"audio_segments must be one of {AUDIO_SEGMENT_MODES}, got {self.audio_segments!r}")
    if self.video_time_tokens % self.num_segments:
      raise ValueError(f"{self.video_time_tokens} video time slices do not split into "
                       f"{self.num_segments} segments")
    if self.audio_tokens % self.num_segments:
      raise ValueError(f"{self.audio_tokens} audio tokens do not split into "
                       f"{self.num_segments} segments")
    if self.audio_segments == "time" and self.audio_time_tokens % self.num_segments:
      raise ValueError("audio_segments='time' needs the audio time grid to split into segments")
    if len(self.tap_layers) != self.decoder_depth:
      raise ValueError("the hierarchical schedule needs one decoder block per tap layer: "
                       f"tap_layers={self.tap_layers}, decoder_depth={self.decoder_depth}")
    if not hasattr(jax.checkpoint_policies, self.remat_policy):
      raise ValueError(f"remat_policy must name a jax.checkpoint_policies entry (e.g. "
                       f"nothing_saveable, dots_saveable), got {self.remat_policy!r}")
    if self.attention_impl not in IMPLEMENTATIONS:
      raise ValueError(f"attention_impl must be one of {IMPLEMENTATIONS}, got "
                       f"{self.attention_impl!r}")
    if max(self.tap_layers) != self.depth:
      raise ValueError(f"the last tap layer must be the final encoder layer {self.depth}")

  # Derived sizes -------------------------------------------------------------------------
  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @property
  def video_time_tokens(self) -> int:
    return self.num_frames // self.tubelet_size

  @property
  def video_grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def video_tokens(self) -> int:
    return self.video_time_tokens * self.video_grid ** 2

  @property
  def video_patch_dim(self) -> int:
    return 3 * self.tubelet_size * self.patch_size ** 2

  @property
  def audio_mel_tokens(self) -> int:
    return self.mel_bins // self.audio_patch_size

  @property
  def audio_time_tokens(self) -> int:
    return self.audio_frames // self.audio_patch_size

  @property
  def audio_tokens(self) -> int:
    return self.audio_mel_tokens * self.audio_time_tokens

  @property
  def audio_patch_dim(self) -> int:
    return self.audio_patch_size ** 2

  @property
  def video_segment_tokens(self) -> int:
    return self.video_tokens // self.num_segments

  @property
  def audio_segment_tokens(self) -> int:
    return self.audio_tokens // self.num_segments


def check_compat(compat: str) -> str:
  if compat not in COMPATS:
    raise ValueError(f"compat must be one of {COMPATS}, got {compat!r}")
  return compat


def model_config_from(section: Any, compat: str = "reference") -> ModelConfig:
  """Builds a :class:`ModelConfig` from ``section``, a ConfigDict (``config.model``) or mapping
  of the same field names.

  ``compat`` ("reference" or "paper") chooses ``audio_segments`` when the config leaves it
  unset (None): the released code's frequency bands, or the paper's time segments.
  """
  values = dict(section)
  if values.get("audio_segments") is None and check_compat(compat):
    values["audio_segments"] = "frequency_bands" if compat == "reference" else "time"
  # config.json files written when the field's default was None (JAX's choice) hold None.
  values["attention_impl"] = values.get("attention_impl") or "auto"
  for key in ("tap_layers", "classifier_hidden", "classifier_dropout"):
    if key in values:
      values[key] = tuple(values[key])
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"unknown model config keys: {unknown}")
  return ModelConfig(**values)
