"""Sliding windows over a whole video for scoring it (spec §12).

Frames are sampled every 0.2 s (5 fps) for at most 10 s (50 frames); a window is 16 consecutive
sampled frames (3.2 s, one model clip) and the next window starts 2 sampled frames (0.4 s) later,
so a 10 s video gives 18 windows. Each window's audio is a slice of the waveform, computed with
the release's formula (``plan_windows``), minus its mean.

``plan_windows`` is the arithmetic alone; ``extract_windows`` applies it to a decoded video: one
face detection per sampled frame (windows share frames), or per keyframe with ``detect_every``
as in preparation (``havic_jax.media.faces.keyframe_boxes``), face crops, and the audio slices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from havic_jax.media.decode import CLIP_SECONDS, FRAMES_PER_CLIP, SAMPLE_RATE, Media
from havic_jax.media.faces import (CROP_SIZE, Detector, crop_region, keyframe_boxes,
                                   nearest_detected, scaled_box)

EVAL_FPS = 5                      # frames sampled per second: one every 0.2 s
MAX_SECONDS = 10.0                # default length scored (EVAL_FPS · 10 s = 50 sampled frames)
WINDOW_FRAMES = FRAMES_PER_CLIP   # sampled frames per window (16, 3.2 s)
WINDOW_STRIDE = 2                 # sampled frames from one window's start to the next (0.4 s)

# VideoWindows.status values, most serious first.
NO_FACE = "no_face"              # no sampled frame has a face: centre squares were cropped
PARTIAL_FACE = "partial_face"    # some sampled frames borrowed the box of the nearest with one
SHORT_PADDED = "short_padded"    # shorter than one window: frames and audio were padded
OK = "ok"


@dataclasses.dataclass(frozen=True)
class WindowPlan:
  """Which frames and samples each window of a video reads.

  frame_indices: int [F] decoded-frame index of each sampled frame.
  window_frames: int [n, 16] indices into the F sampled frames, window i = 2i … 2i + 15 (a padded
    window repeats the last sampled frame).
  audio_ranges: int [n, 2] [start, end) waveform samples of each window.
  starts: float [n] window start times, seconds (0.4·i).
  window_samples: audio samples per window after padding (end − start of every window, or
    3.2 s worth when padded).
  padded: the video is shorter than one window.
  """

  frame_indices: np.ndarray
  window_frames: np.ndarray
  audio_ranges: np.ndarray
  starts: np.ndarray
  window_samples: int
  padded: bool

  @property
  def num_windows(self) -> int:
    return len(self.starts)


def _sample_times_below(seconds: float) -> int:
  """How many sampling times k / EVAL_FPS (k = 0, 1, …) are < ``seconds``."""
  return int(np.ceil(seconds * EVAL_FPS - 1e-9))


def plan_windows(num_video_frames: int, fps: float, num_samples: int,
                 sample_rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS
                 ) -> WindowPlan:
  """The windows of a video of ``num_video_frames`` frames at ``fps`` with ``num_samples`` audio
  samples at ``sample_rate`` Hz, scoring at most ``max_seconds``.

  Frames: the sampling times are t = k / 5 s with t < min(duration, max_seconds); each takes
  the decoded frame nearest to it (index round(t·fps), at most N − 1). With K sampling times
  (K ≥ 16) there are n = (K − 16) // 2 + 1 windows and the plan keeps the F = 16 + 2(n − 1)
  frames they cover (one trailing frame is dropped when K − 16 is odd).

  Audio, the release's formula: with frames_in_video = the number of sampling times below the
  whole video's duration, total = int(F / frames_in_video · num_samples),
  seg = int(total·16 / (16 + 2(n − 1))), hop = int(seg·2 / 16), and window i covers
  [i·hop, i·hop + seg) — the frame-aligned slice [0.4i s, 0.4i + 3.2 s) up to rounding (and up
  to one sampled frame when the duration is not a multiple of 0.2 s).

  A video with K < 16 sampling times gives one padded window: its 16 frames are the K sampled
  frames then the last one repeated, and its audio range is [0, min(num_samples, 3.2 s)), to be
  zero-padded to 3.2 s.
  """
  if num_video_frames < 1 or fps <= 0 or max_seconds <= 0:
    raise ValueError(f"need frames, a frame rate and a length to score; got {num_video_frames} "
                     f"frames at {fps} fps, max_seconds={max_seconds}")
  duration = num_video_frames / fps
  sampled = _sample_times_below(min(duration, max_seconds))
  padded = sampled < WINDOW_FRAMES
  if padded:
    num_windows, used = 1, sampled
    window_frames = np.minimum(np.arange(WINDOW_FRAMES), used - 1)[None]
    window_samples = int(round(CLIP_SECONDS * sample_rate))
    audio_ranges = np.array([[0, min(num_samples, window_samples)]])
  else:
    num_windows = (sampled - WINDOW_FRAMES) // WINDOW_STRIDE + 1
    used = WINDOW_FRAMES + WINDOW_STRIDE * (num_windows - 1)
    window_frames = WINDOW_STRIDE * np.arange(num_windows)[:, None] + np.arange(WINDOW_FRAMES)
    total = int(used / _sample_times_below(duration) * num_samples)
    window_samples = int(total * WINDOW_FRAMES / (WINDOW_FRAMES + WINDOW_STRIDE *
                                                  (num_windows - 1)))
    hop = int(window_samples * WINDOW_STRIDE / WINDOW_FRAMES)
    first = hop * np.arange(num_windows)
    audio_ranges = np.stack([first, first + window_samples], axis=1)
  nearest = np.floor(np.arange(used) * fps / EVAL_FPS + 0.5).astype(int)
  return WindowPlan(frame_indices=np.minimum(nearest, num_video_frames - 1),
                    window_frames=window_frames, audio_ranges=audio_ranges,
                    starts=np.arange(num_windows) * WINDOW_STRIDE / EVAL_FPS,
                    window_samples=window_samples, padded=padded)


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
  """The largest centred square of a width × height frame as pixels (x0, y0, x1, y1)."""
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  return left, top, left + side, top + side


@dataclasses.dataclass(frozen=True)
class VideoWindows:
  """A video cut into windows.

  plan: the frames and samples read (``plan_windows``).
  crops: uint8 [F', crop, crop, 3] crops of the F sampled frames; F' = 16 when padded (the last
    crop repeated), else F.
  audio: float32 [n, plan.window_samples] each window's waveform slice minus its mean (zeros
    after the slice when padded), or None when the video has no audio.
  faces_detected: bool [F] whether each sampled frame had a box of its own, detected or (with
    ``detect_every`` > 1) interpolated between two keyframes with a face.
  status: NO_FACE, PARTIAL_FACE, SHORT_PADDED or OK — the first that applies.
  """

  plan: WindowPlan
  crops: np.ndarray
  audio: np.ndarray | None
  faces_detected: np.ndarray
  status: str

  def window_video(self, index: int) -> np.ndarray:
    """uint8 [16, crop, crop, 3] the crops of window ``index``."""
    return self.crops[self.plan.window_frames[index]]


def extract_windows(media: Media, detect: Detector, max_seconds: float = MAX_SECONDS,
                    crop_size: int = CROP_SIZE, detect_every: int = 1) -> VideoWindows:
  """The windows of a decoded video (``plan_windows``), with face crops and audio slices.

  ``detect`` runs once on each sampled frame, or with ``detect_every`` = k on every k-th sampled
  frame and the last only, the frames between getting the boxes interpolated between the
  keyframes around them (``keyframe_boxes``, as preparation's ``--detect_every``; about k times
  fewer detections). A frame without a box is cropped with the box of the nearest sampled frame
  that has one (``nearest_detected``), scaled as in training (``scaled_box``). When no sampled
  frame has a face, each frame's centre square is cropped. The status depends on the keyframes
  only: NO_FACE when none has a face, PARTIAL_FACE when some has none.
  """
  num_samples = 0 if media.audio is None else len(media.audio)
  plan = plan_windows(len(media.frames), media.fps, num_samples, media.sample_rate, max_seconds)
  frames = media.frames[plan.frame_indices]
  height, width = frames.shape[1:3]
  boxes = keyframe_boxes(frames, detect, detect_every)
  detected = np.array([box is not None for box in boxes])
  if detected.any():
    regions = [scaled_box(box, width, height) for box in nearest_detected(boxes)]
  else:
    regions = [centre_square(width, height)] * len(frames)
  crops = np.stack([crop_region(frame, region, crop_size)
                    for frame, region in zip(frames, regions)])
  if plan.padded:
    crops = crops[plan.window_frames[0]]
  audio = None
  if media.audio is not None:
    audio = np.zeros((plan.num_windows, plan.window_samples), np.float32)
    for row, (start, end) in zip(audio, plan.audio_ranges):
      piece = media.audio[start:end].astype(np.float64)
      row[:len(piece)] = piece - piece.mean()
  if not detected.any():
    status = NO_FACE
  elif not detected.all():
    status = PARTIAL_FACE
  else:
    status = SHORT_PADDED if plan.padded else OK
  return VideoWindows(plan, crops, audio, detected, status)
