"""Per-video scores from window outputs (spec §12): the report entry of each video and the
scoring of a list of videos on the device mesh with throughput.

Classifier: a video's score is sigmoid(mean window logit) (or, with face tracks, of the
largest track mean); coherence: each window's score is how little its audio and video segment
embeddings agree, ``(1 − cos) / 2``, and the least coherent windows are listed as the likely
manipulated moments.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tqdm

from havic_jax.detectors import fakeout
from havic_jax.evaluation import reports
from havic_jax.evaluation.inputs import WindowInputs, window_inputs
from havic_jax.evaluation.scoring import WindowScorer
from havic_jax.evaluation.videos import EvalData, EvalVideo

LEAST_COHERENT = 3  # windows listed per video as the likely manipulated moments


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def video_result(video: EvalVideo, inputs: WindowInputs, outputs: Optional[Mapping[str, Any]],
                 classifier: bool, id_suffix: str = "") -> reports.VideoResult:
  """A video's report entry from its window outputs (None: not scored).

  Classifier: window score sigmoid(logit of ``inputs.head``, or of ``overall`` for detectors
  without that head); video score sigmoid(mean logit), or with face tracks sigmoid(max over
  tracks of the mean of up to 9 uniformly spaced windows) (``fakeout.video_logit``).
  Coherence: window score (1 − mean segment cosine) / 2, video score the mean of those. The
  LEAST_COHERENT windows with the lowest coherence are listed when the scorer gives one."""
  common = dict(video_id=video.video_id + id_suffix, path=video.path, label=video.label,
                category=video.category, status=inputs.status, detail=inputs.detail)
  if outputs is None:
    return reports.VideoResult(score=float("nan"), num_windows=0, window_starts=[],
                               window_scores=[], least_coherent=[], **common)
  if classifier:
    logits = np.asarray(outputs.get(inputs.head, outputs["overall"]), np.float64)
    window_scores = _sigmoid(logits)
    if inputs.tracks is not None:
      score = float(_sigmoid(fakeout.video_logit(logits, inputs.tracks)))
    else:
      score = float(_sigmoid(logits.mean()))
  else:
    window_scores = (1.0 - np.asarray(outputs["coherence"], np.float64).mean(axis=1)) / 2.0
    score = float(window_scores.mean())
  least = []
  if "coherence" in outputs:
    window_coherence = np.asarray(outputs["coherence"], np.float64).mean(axis=1)
    least = sorted(inputs.starts[np.argsort(window_coherence, kind="stable")[:LEAST_COHERENT]]
                   .tolist())
  return reports.VideoResult(score=score, num_windows=len(window_scores),
                             window_starts=inputs.starts.tolist(),
                             window_scores=window_scores.tolist(), least_coherent=least,
                             **common)


def score_videos(videos: Sequence[EvalVideo], data: EvalData, scorer: WindowScorer,
                 max_seconds: float, no_audio: bool, workers: int,
                 condition: Optional[str] = None, description: str = "scoring",
                 detect_every: int = 1) -> Tuple[List[reports.VideoResult], Dict[str, float]]:
  """Scores ``videos``; returns their report entries and throughput (videos/s, windows/s).
  ``detect_every``: faces detected on every k-th sampled frame of raw videos
  (``inputs.window_inputs``)."""
  started = time.perf_counter()
  inputs_of: Dict[int, WindowInputs] = {}

  def items():
    face_tracks = scorer.face_tracks
    for index, inputs in enumerate(
        window_inputs(videos, data, scorer.model_config, max_seconds, no_audio, condition, workers,
                      face_tracks, detect_every)):
      inputs_of[index] = inputs
      yield index, inputs.video, inputs.audio

  suffix = "" if condition is None else f"@{condition}"
  results, num_windows = [], 0
  bar = tqdm.tqdm(total=len(videos), desc=description, unit="video")
  for index, outputs in scorer.score_stream(items()):
    inputs = inputs_of.pop(index)
    results.append(video_result(videos[index], inputs, outputs, scorer.classifier, suffix))
    num_windows += results[-1].num_windows
    bar.update(1)
  bar.close()
  seconds = time.perf_counter() - started
  return results, {"videos": len(videos), "windows": num_windows, "seconds": seconds,
                   "videos_per_second": len(videos) / max(seconds, 1e-9),
                   "windows_per_second": num_windows / max(seconds, 1e-9)}
