"""The detectors this codebase trains and scores, all on the shared encoders.

``config.detector.name`` picks one:

- ``havic``: the HAVIC pretraining model (stage ``pretrain``) and classifier (``finetune``);
- ``consistency``: intra-/cross-modal consistency, unsupervised (``pretrain`` on real clips);
- ``voice_face``: voice–face matching, VFD (``pretrain`` with identities, ``finetune``);
- ``fine_grained``: spatially-local head + temporally-local pseudo-fakes (``finetune``);
- ``fakeout``: pooled features + MLP, clip-averaged and face-track-max at test time
  (``finetune``).

Every detector's model takes ``(video, audio, deterministic)`` (HAVIC's pretraining model also
takes the kept token indices), gives a loss function ``(params, batch, key) -> (loss,
metrics)`` for the train step, and a window scorer ``(params, video uint8, audio) -> {"overall":
fake logit [B], ...}`` for the eval binary.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import ml_collections

from havic_jax.models.config import ModelConfig

HAVIC = "havic"


@dataclasses.dataclass(frozen=True)
class DetectorInfo:
  """What a detector is and what its training data must carry.

  stages: the training stages it has; real_only: pretraining reads real clips only;
  identities: batches carry ``identity`` ids, grouped as I identities × several clips;
  face_tracks: the eval binary scores every face track and keeps the maximum; thresholded: its
  fake logit has a decision threshold at 0 (else the eval binary reports no ACC)."""

  paper: str
  stages: Tuple[str, ...]
  real_only: bool = False
  identities: bool = False
  face_tracks: bool = False
  thresholded: bool = True


DETECTORS: Dict[str, DetectorInfo] = {
    HAVIC: DetectorInfo("HAVIC (this codebase's main model)", ("pretrain", "finetune")),
    "consistency": DetectorInfo(
        "Unsupervised Multimodal Deepfake Detection Using Intra- and Cross-Modal "
        "Inconsistencies", ("pretrain",), real_only=True, identities=True, thresholded=False),
    "voice_face": DetectorInfo("Voice-Face Homogeneity Tells Deepfake (VFD)",
                               ("pretrain", "finetune"), real_only=True, identities=True),
    "fine_grained": DetectorInfo(
        "Detecting Audio-Visual Deepfakes with Fine-Grained Inconsistencies", ("finetune",)),
    "fakeout": DetectorInfo(
        "FakeOut: Leveraging Out-of-domain Self-supervision for Multi-modal Video Deepfake "
        "Detection", ("finetune",), face_tracks=True),
}


def detector_options(name: str = HAVIC) -> ml_collections.ConfigDict:
  """``config.detector``: the detector's name and options. embed_dim: embedding width of the
  consistency and voice–face spaces; num_identities: identity classes of the voice–face
  pretraining heads (0: the training loop counts the training data's identities); dropout: of
  the FakeOut MLP."""
  return ml_collections.ConfigDict({"name": name, "embed_dim": 128, "num_identities": 0,
                                    "dropout": 0.0})


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


def _module(name: str):
  from havic_jax.detectors import consistency, fakeout, fine_grained, voice_face
  return {"consistency": consistency, "voice_face": voice_face, "fine_grained": fine_grained,
          "fakeout": fakeout}[name]


def model_kind(config: Any) -> str:
  """The ``example_inputs`` kind of the model: HAVIC pretraining takes kept token indices
  ("pretrain"); every other model takes (video, audio) ("finetune")."""
  return "pretrain" if detector_name(config) == HAVIC and config.stage == "pretrain" else (
      "finetune")


def build_model(cfg: ModelConfig, config: Any) -> nn.Module:
  """The model ``config`` trains."""
  name = detector_name(config)
  if name == HAVIC:
    from havic_jax.models.havic import build_model as build_havic
    return build_havic(cfg, config.stage)
  return _module(name).build_model(cfg, config.detector)


def loss_fn(model: nn.Module, cfg: ModelConfig, config: Any) -> Callable:
  """The training loss ``(params, batch, key) -> (loss, metrics)`` of ``config``."""
  info(config)
  name = detector_name(config)
  if name == HAVIC:
    from havic_jax.detectors import havic
    return (havic.pretrain_loss_fn(model, cfg, config) if config.stage == "pretrain"
            else havic.finetune_loss_fn(model))
  return _module(name).loss_fn(model, cfg, config)


def window_scorer(cfg: ModelConfig, config: Any) -> Callable:
  """``(params, video [B, F, H, W, 3] uint8 or in [0, 1], audio [B, T, M]) -> {"overall": fake
  logit [B], ...}`` of the trained detector (HAVIC: its fine-tuned classifier, with the
  ``audio`` and ``video`` head logits too)."""
  name = detector_name(config)
  if name == HAVIC:
    from havic_jax.models.havic import build_model as build_havic
    from havic_jax.models.inputs import unit_video
    model = build_havic(cfg, "finetune")

    def havic_scores(params, video, audio):
      out = model.apply({"params": params}, unit_video(video), audio)
      return {"overall": out["logit"], "audio": out["audio_logit"], "video": out["video_logit"]}
    return havic_scores
  module = _module(name)
  model = module.build_model(cfg, config.detector)
  return lambda params, video, audio: module.window_outputs(model, params, video, audio)
