"""Decoding videos with PyAV: RGB frames, 16 kHz mono audio, and clip frame sampling (spec §1).

Every failure raises :class:`MediaError` naming the file and what is wrong, so callers can
report and skip a bad file instead of crashing.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Union

import av
import numpy as np
import soxr

SAMPLE_RATE = 16000         # model audio rate (Hz)
CLIP_SECONDS = 3.2          # one clip
FRAMES_PER_CLIP = 16        # frames sampled per clip (≈ 5 fps)

PathLike = Union[str, pathlib.Path]


class MediaError(RuntimeError):
  """A media file cannot be used; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class Media:
  """A decoded file. frames: uint8 [N, H, W, 3] RGB; fps: frames per second; audio: float32
  [S] mono on the [-1, 1] scale at ``sample_rate`` Hz, or None when the file has no audio."""

  path: str
  frames: np.ndarray
  fps: float
  audio: np.ndarray | None
  sample_rate: int

  @property
  def duration(self) -> float:
    """Video duration in seconds (frame count / fps)."""
    return len(self.frames) / self.fps


def _mono(chunks: list, stream: av.audio.stream.AudioStream, sample_rate: int) -> np.ndarray:
  """Decoded audio frames -> float32 mono [S] on the [-1, 1] scale at ``sample_rate``."""
  wave = np.concatenate(chunks, axis=1)
  if not stream.format.is_planar:  # packed: [1, samples·channels]
    wave = wave.reshape(-1, stream.channels or 1).T
  if np.issubdtype(wave.dtype, np.integer):
    wave = wave / float(np.iinfo(wave.dtype).max + 1)
  mono = wave.astype(np.float64).mean(axis=0)
  if stream.rate != sample_rate:
    mono = soxr.resample(mono, stream.rate, sample_rate)
  return mono.astype(np.float32)


def read_media(path: PathLike, sample_rate: int = SAMPLE_RATE) -> Media:
  """Decodes every video frame (RGB) and the first audio track (mono, resampled) in one pass.

  Raises MediaError for an unreadable file or one without a video stream or frames."""
  path = str(path)
  frames, chunks = [], []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
      video = container.streams.video[0]
      audio = container.streams.audio[0] if container.streams.audio else None
      fps = float(video.average_rate or video.guessed_rate or 0)
      for frame in container.decode(*[s for s in (video, audio) if s is not None]):
        if isinstance(frame, av.VideoFrame):
          frames.append(frame.to_ndarray(format="rgb24"))
        else:
          chunks.append(frame.to_ndarray())
      wave = _mono(chunks, audio, sample_rate) if chunks else None
  except MediaError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as error:
    raise MediaError(f"{path}: cannot decode ({error})") from error
  if not frames:
    raise MediaError(f"{path}: the video stream has no frames")
  if fps <= 0:
    raise MediaError(f"{path}: the video stream has no frame rate")
  return Media(path, np.stack(frames), fps, wave, sample_rate)


def clip_frame_indices(num_frames: int, frames_per_clip: int = FRAMES_PER_CLIP) -> np.ndarray:
  """``linspace(0, N − 1, frames_per_clip).astype(int)`` over a clip's N decoded frames."""
  if num_frames < 1:
    raise ValueError("a clip needs at least one frame")
  return np.linspace(0, num_frames - 1, frames_per_clip).astype(int)
