"""Re-encoding videos for the robustness protocol: H.264 at a given CRF with mono AAC audio at a
given sample rate (CRF 23 with 44.1 kHz audio, CRF 40 with 16 kHz audio).

Every video frame and the audio are decoded (``read_media``, audio resampled to the condition's
rate) and written again with the same frame rate and size (cropped to even width and height, as
yuv420p needs), staged and published whole (``storage.staged``).
"""

from __future__ import annotations

import dataclasses
import fractions
from typing import Dict

import av
import numpy as np

from havic_jax import storage
from havic_jax.media.decode import PathLike, read_media

VIDEO_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
AUDIO_CODEC = "aac"
MAX_RATE_DENOMINATOR = 1001   # frame rates as exact fractions: 25, 30000/1001, 24000/1001, …


@dataclasses.dataclass(frozen=True)
class Condition:
  """One re-encoding: H.264 constant rate factor ``crf`` and audio ``audio_rate`` (Hz)."""

  name: str
  crf: int
  audio_rate: int


CONDITIONS: Dict[str, Condition] = {
    condition.name: condition
    for condition in (Condition("crf23_44k", crf=23, audio_rate=44100),
                      Condition("crf40_16k", crf=40, audio_rate=16000))}


def write_video(path: PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None,
                sample_rate: int, crf: int, preset: str = "medium") -> None:
  """Writes H.264 (yuv420p, CRF ``crf``, x264 ``preset``) and mono AAC to ``path`` (an mp4),
  staged and published whole (``storage.staged``: a local file via ``<name>.partial`` in the
  same folder and an atomic rename).

  frames: uint8 [N, H, W, 3] RGB, cropped to even H and W; fps: frames per second; audio:
  float32 [S] mono on the [-1, 1] scale at ``sample_rate`` Hz, or None for no audio stream.
  """
  height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
  rate = fractions.Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)
  with storage.staged(path) as staging, av.open(str(staging), mode="w",
                                                format="mp4") as container:
    video = container.add_stream(VIDEO_CODEC, rate=rate)
    video.width, video.height, video.pix_fmt = width, height, PIXEL_FORMAT
    video.options = {"crf": str(crf), "preset": preset}
    sound = None if audio is None else container.add_stream(AUDIO_CODEC, rate=sample_rate,
                                                            layout="mono")
    for index, image in enumerate(frames[:, :height, :width]):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
      frame.pts, frame.time_base = index, 1 / rate
      container.mux(video.encode(frame))
    container.mux(video.encode())
    if sound is not None:
      samples = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None], format="flt",
                                           layout="mono")
      samples.sample_rate, samples.pts = sample_rate, 0
      samples.time_base = fractions.Fraction(1, sample_rate)
      container.mux(sound.encode(samples))
      container.mux(sound.encode())


def reencode(src: PathLike, dst: PathLike, condition: Condition) -> None:
  """Re-encodes ``src`` into ``dst`` under ``condition`` (same frame rate and size; audio mono
  at ``condition.audio_rate``; no audio stream when ``src`` has none).

  Raises MediaError naming ``src`` when it cannot be decoded."""
  media = read_media(src, sample_rate=condition.audio_rate)
  write_video(dst, media.frames, media.fps, media.audio, condition.audio_rate, condition.crf)
