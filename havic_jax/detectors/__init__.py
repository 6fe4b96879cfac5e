"""The detectors this codebase trains and scores, all on the shared encoders.

``config.detector.name`` picks one:

- ``havic``: the HAVIC pretraining model (stage ``pretrain``) and classifier (``finetune``);
- ``consistency``: intra-/cross-modal consistency, unsupervised (``pretrain`` on real clips);
- ``voice_face``: voice–face matching, VFD (``pretrain`` with identities, ``finetune``);
- ``fine_grained``: spatially-local head + temporally-local pseudo-fakes (``finetune``);
- ``fakeout``: pooled features + MLP, clip-averaged and face-track-max at test time
  (``finetune``).

Each is a module ``havic_jax.detectors.<name>`` with the same interface, found by name:

- ``build_model(model_config, stage, options) -> nn.Module`` (``options``:
  ``config.detector``), a model taking ``(video, audio, deterministic)`` (a stage in
  ``masked_stages`` also takes the kept token indices);
- ``loss_fn(model, model_config, config) -> (params, batch, key) -> (loss, metrics)`` for the
  train step;
- ``window_outputs(model, params, video uint8, audio) -> {"overall": fake logit [B], ...}`` for
  the eval binary and the training loop's validation.

What each trains on and how it is scored is its :class:`DetectorInfo` in ``DETECTORS``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax

from havic_jax.models.config import ModelConfig
from havic_jax.models.havic_models import abstract_params

HAVIC = "havic"


@dataclasses.dataclass(frozen=True)
class DetectorInfo:
  """What a detector is and what its training data must carry.

  name: its module in ``havic_jax.detectors``; stages: the training stages it has, in training
  order (each stage starts from the previous one's checkpoint); real_only: pretraining reads
  real clips only; identities: batches carry ``identity`` ids, grouped as I identities × several
  clips; face_tracks: the eval binary scores every face track and keeps the maximum;
  thresholded: its fake logit has a decision threshold at 0 (else the eval binary reports no
  ACC); masked_stages: stages whose model also takes kept token indices
  (:meth:`kept_token_inputs`); unscored_stages: stages whose model gives no fake logit (their
  checkpoints are scored by audio-visual coherence only)."""

  name: str
  paper: str
  stages: Tuple[str, ...]
  real_only: bool = False
  identities: bool = False
  face_tracks: bool = False
  thresholded: bool = True
  masked_stages: Tuple[str, ...] = ()
  unscored_stages: Tuple[str, ...] = ()

  @property
  def module(self) -> types.ModuleType:
    """``havic_jax.detectors.<name>``: its model, loss and window outputs."""
    return importlib.import_module(f"{__name__}.{self.name}")

  def kept_token_inputs(self, stage: str) -> bool:
    """Whether the ``stage`` model takes kept token indices besides video and audio
    (``models.havic_models.example_inputs``)."""
    return stage in self.masked_stages


DETECTORS: Dict[str, DetectorInfo] = {detector.name: detector for detector in (
    DetectorInfo(HAVIC, "HAVIC (this codebase's main model)", ("pretrain", "finetune"),
                 masked_stages=("pretrain",), unscored_stages=("pretrain",)),
    DetectorInfo(
        "consistency", "Unsupervised Multimodal Deepfake Detection Using Intra- and Cross-Modal "
        "Inconsistencies", ("pretrain",), real_only=True, identities=True, thresholded=False),
    DetectorInfo("voice_face", "Voice-Face Homogeneity Tells Deepfake (VFD)",
                 ("pretrain", "finetune"), real_only=True, identities=True),
    DetectorInfo(
        "fine_grained", "Detecting Audio-Visual Deepfakes with Fine-Grained Inconsistencies",
        ("finetune",)),
    DetectorInfo(
        "fakeout", "FakeOut: Leveraging Out-of-domain Self-supervision for Multi-modal Video "
        "Deepfake Detection", ("finetune",), face_tracks=True),
)}


def info(config: Any) -> DetectorInfo:
  """The detector ``config.detector.name`` names, checked against ``config.stage``."""
  name = detector_name(config)
  if name not in DETECTORS:
    raise ValueError(f"detector.name must be one of {sorted(DETECTORS)}, got {name!r}")
  detector = DETECTORS[name]
  if config.stage not in detector.stages:
    raise ValueError(f"detector {name!r} trains in stage(s) {detector.stages}, not "
                     f"{config.stage!r}")
  return detector


def detector_name(config: Any) -> str:
  """``config.detector.name`` (HAVIC for configs written before detectors were selectable)."""
  return config.detector.name if "detector" in config else HAVIC


def options_of(config: Optional[Any]) -> Any:
  """``config.detector``; None without a config (an export) or for configs written before
  detectors were selectable (HAVIC, which has no options)."""
  return config.detector if config is not None and "detector" in config else None


def kept_token_inputs(config: Any) -> bool:
  """Whether the model ``config`` trains takes kept token indices besides video and audio."""
  return info(config).kept_token_inputs(config.stage)


def build_model(model_config: ModelConfig, config: Any) -> nn.Module:
  """The model ``config`` trains."""
  return info(config).module.build_model(model_config, config.stage, options_of(config))


def loss_fn(model: nn.Module, model_config: ModelConfig, config: Any) -> Callable:
  """The training loss ``(params, batch, key) -> (loss, metrics)`` of ``config``."""
  return info(config).module.loss_fn(model, model_config, config)


def param_paths(model_config: ModelConfig, name: str, stage: str, options: Any = None
                ) -> Tuple[Tuple[str, ...], ...]:
  """The path (tuple of names) of every parameter of detector ``name``'s ``stage`` model,
  traced without allocating (``options``: its ``config.detector``)."""
  detector = DETECTORS[name]
  model = detector.module.build_model(model_config, stage, options)
  with jax.set_mesh(None), nn.logical_axis_rules(()):
    params = nn.unbox(abstract_params(model, model_config, detector.kept_token_inputs(stage)))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return tuple(tuple(key.key for key in path) for path, _ in flat)


def window_scorer(model_config: ModelConfig,
                  name: str,
                  stage: str,
                  options: Any = None) -> Callable:
  """``(params, video [B, F, H, W, 3] uint8 or in [0, 1], audio [B, T, M]) -> {"overall": fake
  logit [B], ...}`` of detector ``name`` trained up to ``stage``, a pure function of its
  arguments (HAVIC: its fine-tuned classifier's head logits and the segment coherence).
  ``options``: the detector's ``config.detector`` (``options_of``)."""
  detector = DETECTORS[name]
  if stage in detector.unscored_stages:
    raise ValueError(f"a {name} {stage} model gives no fake logit")
  model = detector.module.build_model(model_config, stage, options)
  return functools.partial(detector.module.window_outputs, model)
