"""Window scoring for the eval binary: checkpoints in, per-window logits and audio-visual
coherence out, batched across windows and videos on the device mesh (spec §12).

A window is one model input: video uint8 [16, S, S, 3] and audio float32 [audio_frames,
mel_bins]. For every window the scorer returns the three head logits of a fine-tuned model
(``logit``, ``audio_logit``, ``video_logit``; absent for a pretraining checkpoint) and the
per-segment coherence: the cosine similarity of the audio and video segment embeddings of the
contrastive space (spec §8: mean of each modality's final-layer patch tokens per segment),
[T] values in [-1, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from havic_jax.checkpoints import runs, released, exported
from havic_jax import detectors, sharding, storage
from havic_jax.detectors.havic_losses import segment_means
from havic_jax.models import layers
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.havic import build_model
from havic_jax.models.reference import param_shapes
from havic_jax.models.inputs import unit_video

Array = jax.Array
HEADS = {"overall": "logit", "audio": "audio_logit", "video": "video_logit"}
ENCODERS = ("video_encoder", "audio_encoder")


class CheckpointError(ValueError):
  """A checkpoint that cannot be scored with the requested scorer."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Parameters to score with. stage: "pretrain" or "finetune" (the model the parameters
  belong to); description: where they come from (path, step, kind), for the report;
  config: the training config (None for an export), which names the detector."""

  cfg: ModelConfig
  stage: str
  params: Mapping[str, Any]
  description: Dict[str, Any]
  config: Optional[Any] = None

  @property
  def detector(self) -> str:
    return detectors.HAVIC if self.config is None else detectors.detector_name(self.config)

  @property
  def has_classifier(self) -> bool:
    """Whether the checkpoint scores videos itself: any detector other than HAVIC, or every
    parameter of HAVIC's fine-tuning classifier present."""
    if self.detector != detectors.HAVIC:
      return True
    if self.stage != "finetune":
      return False
    present = traverse_util.flatten_dict(self.params)
    return all(path in present for path in param_shapes(self.cfg, "finetune"))


def load_released(path: str) -> Checkpoint:
  """A released HAVIC state_dict file, converted in memory (``released.load_released``)."""
  try:
    loaded = released.load_released(path, sources=tuple(released.HAVIC_SOURCES))
  except released.LayoutError as error:
    raise CheckpointError(f"{error}: scoring needs a HAVIC checkpoint (a MARLIN or AudioMAE "
                          f"state_dict initialises training: --config.init_from={path})") from error
  logging.info("%s", released.summary(loaded.report))
  report = loaded.report
  description = {"kind": "released", "path": report["input"], "source": loaded.source,
                 "keys": {status: len(report[status])
                          for status in ("loaded", "recomputed", "unused")},
                 "fixed_tables": report["fixed_tables"]}
  return Checkpoint(loaded.cfg, loaded.stage, loaded.params, description)


def load_checkpoint(path: str, step: Optional[int] = None) -> Checkpoint:
  """A training workdir (at ``step``; default: the best checkpoint by the run's
  ``checkpoint.best_metric`` if it kept one, else the latest), an export directory
  (``python -m havic_jax.export`` / ``python -m havic_jax.convert``) or a released HAVIC
  state_dict file (``.pth``, ``.safetensors``, ``.npz``: converted in memory)."""
  if released.is_released_file(path):
    return load_released(path)
  directory = storage.path(path)
  if (directory / runs.CHECKPOINT_DIR).is_dir():
    step = runs.best_step(path) if step is None else step
    config, params = runs.load_params(path, step)
    cfg = model_config_from(config.model, config.compat)
    return Checkpoint(cfg, config.stage, params,
                      {"kind": "workdir", "path": str(directory),
                       "step": "latest" if step is None else int(step),
                       "detector": detectors.detector_name(config)}, config)
  if (directory / exported.CONFIG_FILE).is_file():
    description = exported.read_export_config(path)
    cfg, params = exported.load_pretrained(path)
    return Checkpoint(cfg, description["stage"], params,
                      {"kind": "export", "path": str(directory),
                       "source": description.get("source", {})})
  raise CheckpointError(f"{path}: neither a training workdir (with {runs.CHECKPOINT_DIR}/)"
                        f", an export directory (with config.json) nor a released state_dict "
                        f"file ({', '.join(released.RELEASED_SUFFIXES)}); pass one of those")


def coherence(audio_tokens: Array, video_tokens: Array, num_segments: int) -> Array:
  """Per-segment cosine similarity [B, T] of final-layer encoder outputs audio [B, T·(1+P_a), D]
  and video [B, T·(1+P_v), D] (segment tokens are left out of the segment means)."""
  patches = lambda x: layers.split_segment_tokens(x, num_segments)[1]
  a = segment_means(patches(audio_tokens), num_segments)
  v = segment_means(patches(video_tokens), num_segments)
  norm = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return jnp.sum(norm(a) * norm(v), axis=-1)


def window_forward(checkpoint: Checkpoint, classifier: bool):
  """(params, video uint8 [B, F, H, W, 3], audio [B, T_a, M]) -> dict of [B] head logits (when
  ``classifier``) and ``coherence`` [B, T], a pure function of its arguments."""
  cfg = checkpoint.cfg
  if classifier and checkpoint.detector != detectors.HAVIC:
    return detectors.window_scorer(cfg, checkpoint.config)
  if classifier:
    model = build_model(cfg, "finetune")

    def forward(params, video, audio):
      out = model.apply({"params": params}, unit_video(video), audio, deterministic=True)
      result = {name: out[key] for name, key in HEADS.items()}
      result["coherence"] = coherence(out["audio_taps"][-1], out["video_taps"][-1],
                                      cfg.num_segments)
      return result
    return forward

  model = build_model(cfg, checkpoint.stage)

  def encode(module, video, audio):
    return (module.audio_encoder(audio, None, True)[-1],
            module.video_encoder(video, None, True)[-1])

  def forward(params, video, audio):
    audio_tokens, video_tokens = model.apply({"params": params}, unit_video(video), audio,
                                             method=encode)
    return {"coherence": coherence(audio_tokens, video_tokens, cfg.num_segments)}
  return forward


class WindowScorer:
  """Scores windows in global batches of ``batch_size`` (rounded up to a multiple of the device
  count) sharded over ``mesh``; parameters are replicated.

  ``classifier``: the checkpoint's own score (HAVIC: the fine-tuned heads, which need a
  fine-tuning checkpoint; other detectors: their fake logit); otherwise only the encoders
  (coherence)."""

  def __init__(self, checkpoint: Checkpoint, mesh: Any, batch_size: int, classifier: bool):
    if classifier and not checkpoint.has_classifier:
      raise CheckpointError(
          f"{checkpoint.description.get('path')}: a {checkpoint.stage} checkpoint without the "
          f"fine-tuned classifier; score it with --scorer=coherence, or pass a fine-tuning "
          f"workdir (or a converted reference fine-tuning checkpoint)")
    missing = [name for name in ENCODERS if name not in checkpoint.params]
    if missing and not (classifier and checkpoint.detector != detectors.HAVIC):
      raise CheckpointError(f"{checkpoint.description.get('path')}: no parameters for {missing}")
    devices = mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.cfg = checkpoint.cfg
    self.classifier = classifier
    self.detector = checkpoint.detector
    params = (checkpoint.params if classifier else
              {name: checkpoint.params[name] for name in ENCODERS})
    self.params = jax.device_put(params, sharding.replicated(mesh))
    self._forward = jax.jit(window_forward(checkpoint, classifier),
                            in_shardings=(sharding.replicated(mesh),
                                          sharding.batch_sharding(mesh),
                                          sharding.batch_sharding(mesh)),
                            out_shardings=sharding.replicated(mesh))

  def score(self, video: np.ndarray, audio: np.ndarray) -> Dict[str, np.ndarray]:
    """Outputs for N windows: video uint8 [N, F, H, W, 3], audio float32 [N, T_a, M] -> dict of
    [N] logits / [N, T] coherence (NumPy). N is padded to whole batches internally."""
    count = len(video)
    padded = -(-count // self.batch_size) * self.batch_size
    pad = lambda x: np.concatenate([x, np.zeros((padded - count,) + x.shape[1:], x.dtype)])
    video, audio = pad(np.asarray(video)), pad(np.asarray(audio, np.float32))
    outputs: List[Dict[str, np.ndarray]] = []
    for start in range(0, padded, self.batch_size):
      end = start + self.batch_size
      outputs.append(jax.device_get(self._forward(self.params, video[start:end],
                                                  audio[start:end])))
    return {key: np.concatenate([o[key] for o in outputs])[:count] for key in outputs[0]}

  def score_stream(self, items: Iterable[Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]]
                   ) -> Iterator[Tuple[Any, Optional[Dict[str, np.ndarray]]]]:
    """Batches windows across videos. items: (key, video [n, ...], audio [n, ...]) per video
    (video None: nothing to score). Yields (key, outputs of its n windows, or None) in the
    order of ``items``, each as soon as the batches holding its windows have run."""
    pending: List[Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]] = []
    queued = 0
    for item in items:
      pending.append(item)
      queued += 0 if item[1] is None else len(item[1])
      if queued >= self.batch_size:
        yield from self._flush(pending)
        pending, queued = [], 0
    yield from self._flush(pending)

  def _flush(self, pending):
    scored = [(key, video, audio) for key, video, audio in pending if video is not None]
    outputs = None
    if scored:
      outputs = self.score(np.concatenate([v for _, v, _ in scored]),
                           np.concatenate([a for _, _, a in scored]))
    offset = 0
    for key, video, _ in pending:
      if video is None:
        yield key, None
        continue
      n = len(video)
      yield key, {name: value[offset:offset + n] for name, value in outputs.items()}
      offset += n
