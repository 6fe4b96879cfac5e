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

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import jax
import numpy as np

from havic_jax import detectors, sharding
from havic_jax.checkpoints.loading import Checkpoint, CheckpointError
from havic_jax.detectors import havic


def window_forward(checkpoint: Checkpoint, classifier: bool):
  """(params, video uint8 [B, F, H, W, 3], audio [B, T_a, M]) -> dict of the detector's window
  outputs (when ``classifier``: its fake logit ``overall`` [B], HAVIC's head logits and
  ``coherence`` [B, T]) or else the ``coherence`` [B, T] of HAVIC's encoders, a pure function of
  its arguments."""
  if classifier:
    return detectors.window_scorer(checkpoint.model_config, checkpoint.detector, checkpoint.stage,
                                   detectors.options_of(checkpoint.config))
  return havic.encoder_coherence(checkpoint.model_config)


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
    missing = [name for name in havic.ENCODERS if name not in checkpoint.params]
    if missing and not classifier:
      raise CheckpointError(f"{checkpoint.description.get('path')}: no parameters for {missing}")
    devices = mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.model_config = checkpoint.model_config
    self.classifier = classifier
    self.detector = checkpoint.detector
    params = (checkpoint.params if classifier else
              {name: checkpoint.params[name] for name in havic.ENCODERS})
    self.params = jax.device_put(params, sharding.replicated(mesh))
    self._forward = jax.jit(window_forward(checkpoint, classifier),
                            in_shardings=(sharding.replicated(mesh),
                                          sharding.batch_sharding(mesh, mesh.axis_names),
                                          sharding.batch_sharding(mesh, mesh.axis_names)),
                            out_shardings=sharding.replicated(mesh))

  @property
  def face_tracks(self) -> bool:
    """Whether videos are scored per face track (the detector's ``face_tracks``; raw videos
    with several people on screen)."""
    return self.classifier and detectors.DETECTORS[self.detector].face_tracks

  def score(self, video: np.ndarray, audio: np.ndarray) -> Dict[str, np.ndarray]:
    """Outputs for N windows: video uint8 [N, F, H, W, 3], audio float32 [N, T_a, M] -> dict of
    [N] logits / [N, T] coherence (NumPy). N is padded to whole batches internally."""
    return self._collect(len(video), self._dispatch(video, audio))

  def _dispatch(self, video: np.ndarray, audio: np.ndarray) -> List[Dict[str, jax.Array]]:
    """Starts the forward passes of N windows (padded to whole batches); returns their device
    outputs without waiting for them."""
    count = len(video)
    padded = -(-count // self.batch_size) * self.batch_size
    pad = lambda x: np.concatenate([x, np.zeros((padded - count,) + x.shape[1:], x.dtype)])
    video, audio = pad(np.asarray(video)), pad(np.asarray(audio, np.float32))
    return [self._forward(self.params, video[start:start + self.batch_size],
                          audio[start:start + self.batch_size])
            for start in range(0, padded, self.batch_size)]

  @staticmethod
  def _collect(count: int, dispatched: List[Dict[str, jax.Array]]) -> Dict[str, np.ndarray]:
    """The first ``count`` windows' outputs of :meth:`_dispatch`'s batches, as NumPy."""
    outputs = jax.device_get(dispatched)
    return {key: np.concatenate([o[key] for o in outputs])[:count] for key in outputs[0]}

  def score_stream(self, items: Iterable[Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]]
                   ) -> Iterator[Tuple[Any, Optional[Dict[str, np.ndarray]]]]:
    """Batches windows across videos. items: (key, video [n, ...], audio [n, ...]) per video
    (video None: nothing to score). Yields (key, outputs of its n windows, or None) in the
    order of ``items``, each once the batches holding its windows have run. One group of
    batches is in flight while the next is gathered (and its inputs made), so the devices
    do not wait for the host between groups."""
    pending: List[Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]] = []
    in_flight = None
    queued = 0
    for item in items:
      pending.append(item)
      queued += 0 if item[1] is None else len(item[1])
      if queued >= self.batch_size:
        launched = (pending, self._launch(pending))
        if in_flight is not None:
          yield from self._finish(*in_flight)
        in_flight, pending, queued = launched, [], 0
    launched = (pending, self._launch(pending))
    if in_flight is not None:
      yield from self._finish(*in_flight)
    yield from self._finish(*launched)

  def _launch(self, pending) -> Optional[Tuple[int, List[Dict[str, jax.Array]]]]:
    """Dispatches the windows of the ``pending`` videos: (window count, device outputs), or
    None when none has windows."""
    scored = [(video, audio) for _, video, audio in pending if video is not None]
    if not scored:
      return None
    video = np.concatenate([v for v, _ in scored])
    return len(video), self._dispatch(video, np.concatenate([a for _, a in scored]))

  def _finish(self, pending, launched):
    outputs = None if launched is None else self._collect(*launched)
    offset = 0
    for key, video, _ in pending:
      if video is None:
        yield key, None
        continue
      n = len(video)
      yield key, {name: value[offset:offset + n] for name, value in outputs.items()}
      offset += n
