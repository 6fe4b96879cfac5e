"""Cutting a decoded video into model clips (spec §1): 3.2 s, 16 face crops, 16 kHz audio.

A clip's frames are the video frames whose timestamps fall in [start, start + 3.2 s), sampled
with ``linspace(0, N − 1, 16)``; its audio is the matching waveform slice, stored as int16.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from havic_jax.media.decode import CLIP_SECONDS, FRAMES_PER_CLIP, Media, clip_frame_indices
from havic_jax.media.faces import Detector, NoFaceError, crop_faces

INT16_SCALE = 32767.0


@dataclasses.dataclass(frozen=True)
class Clip:
  """One model input. frames: uint8 [16, 224, 224, 3] face crops; audio: int16 [51200]
  (3.2 s at 16 kHz); start: seconds from the start of the video; faces_detected: how many of
  the 16 frames had their own detection (the rest borrowed a neighbour's box)."""

  start: float
  frames: np.ndarray
  audio: np.ndarray
  faces_detected: int


def clip_starts(duration: float, clip_seconds: float = CLIP_SECONDS,
                hop_seconds: Optional[float] = None) -> List[float]:
  """Start times (s) of the whole clips that fit in ``duration`` seconds, ``hop_seconds`` apart
  (default: back to back)."""
  hop = hop_seconds or clip_seconds
  if duration < clip_seconds:
    return []
  count = int(np.floor((duration - clip_seconds) / hop + 1e-9)) + 1
  return [round(i * hop, 6) for i in range(count)]


def to_int16(wave: np.ndarray) -> np.ndarray:
  """float waveform on the [-1, 1] scale -> int16 (clipped)."""
  return np.round(np.clip(wave, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def extract_clips(media: Media, detect: Detector, clip_seconds: float = CLIP_SECONDS,
                  hop_seconds: Optional[float] = None, max_clips: Optional[int] = None,
                  detect_every: int = 1) -> Tuple[List[Clip], List[str]]:
  """All usable clips of a video, and one reason per rejected clip.

  Needs ``media.audio``; a clip is rejected when too few of its frames have a face;
  ``detect_every`` is :func:`~havic_jax.media.faces.crop_faces`'s.
  """
  if media.audio is None:
    raise ValueError(f"{media.path}: no audio track")
  samples = int(round(clip_seconds * media.sample_rate))
  frame_times = np.arange(len(media.frames)) / media.fps
  clips, rejected = [], []
  for start in clip_starts(media.duration, clip_seconds, hop_seconds)[:max_clips]:
    first = int(round(start * media.sample_rate))
    audio = media.audio[first:first + samples]
    in_clip = np.nonzero((frame_times >= start - 1e-6) &
                         (frame_times < start + clip_seconds - 1e-6))[0]
    if len(audio) < samples or len(in_clip) == 0:
      rejected.append(f"clip at {start:.1f} s: the audio or video ends early")
      continue
    chosen = media.frames[in_clip[clip_frame_indices(len(in_clip), FRAMES_PER_CLIP)]]
    try:
      crops, detected = crop_faces(chosen, detect, detect_every=detect_every)
    except NoFaceError as error:
      rejected.append(f"clip at {start:.1f} s: {error}")
      continue
    clips.append(Clip(start, crops, to_int16(audio), int(detected.sum())))
  return clips, rejected
