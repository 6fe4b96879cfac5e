"""The sound of the synthetic corpus (``havic_jax.data.synthetic``): speech-like tracks, their
loudness per video frame (which opens the mouth) and the hiss a cloned voice carries.

A track is a few harmonics of a slowly drifting pitch, amplitude-modulated by syllables and
pauses; voice cloning (`rtvc`) adds vocoder hiss while the voice sounds.
"""

import numpy as np

VOCODER_HISS = 0.05              # rtvc: noise std at full loudness, follows the track's envelope
VOCODER_WINDOW_S = 0.02          # envelope window of the hiss, seconds


def syllable_envelope(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
  """float32 [round(seconds * sample_rate)] in [0, 1]: raised-cosine syllables at 3–6 Hz."""
  num_samples = int(round(seconds * sample_rate))
  envelope = np.zeros(num_samples, np.float32)
  start = rng.uniform(0.0, 0.15)
  while start < seconds:
    if rng.random() < 0.15:
      start += rng.uniform(0.2, 0.5)  # a pause between words
      continue
    length = 1.0 / rng.uniform(3.0, 6.0)
    first, last = int(start * sample_rate), min(int((start + length) * sample_rate), num_samples)
    phase = (np.arange(first, last) / sample_rate - start) / length
    envelope[first:last] = rng.uniform(0.4, 1.0) * np.sin(np.pi * phase) ** 2
    start += length + rng.uniform(0.0, 0.05)
  return envelope


def speech_like_audio(rng: np.random.Generator, seconds: float, sample_rate: int,
                      pitch_hz: float) -> np.ndarray:
  """float32 [round(seconds * sample_rate)] waveform in [-1, 1] that sounds vaguely voiced.

  Five harmonics (amplitude 1/k) of a pitch drifting ±12% around `pitch_hz`, multiplied by
  `syllable_envelope`, peak 0.5, plus white noise of standard deviation 0.005.
  """
  envelope = syllable_envelope(rng, seconds, sample_rate)
  t = np.arange(envelope.size) / sample_rate
  pitch = pitch_hz * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t
                                          + rng.uniform(0, 2 * np.pi)))
  phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
  voice = sum(np.sin(k * phase) / k for k in range(1, 6))
  voice *= 0.5 / np.max(np.abs(voice))
  audio = envelope * voice + rng.normal(0.0, 0.005, envelope.size)
  return np.clip(audio, -1.0, 1.0).astype(np.float32)


def envelope_per_frame(audio: np.ndarray, sample_rate: int, fps: float,
                       num_frames: int) -> np.ndarray:
  """float32 [num_frames] RMS of `audio` over each video frame's 1/fps s, divided by its maximum."""
  edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
  rms = np.array([np.sqrt(np.mean(np.square(audio[a:b], dtype=np.float64))) if b > a else 0.0
                  for a, b in zip(edges[:-1], edges[1:])])
  return (rms / max(rms.max(), 1e-12)).astype(np.float32)


def vocoder_trace(rng: np.random.Generator, track: np.ndarray, sample_rate: int) -> np.ndarray:
  """float32 `track` plus white hiss of std VOCODER_HISS × its normalised RMS envelope
  (VOCODER_WINDOW_S windows): the noise a neural vocoder leaves while the voice sounds."""
  window = max(1, int(round(VOCODER_WINDOW_S * sample_rate)))
  power = np.convolve(np.square(track, dtype=np.float64), np.ones(window) / window, "same")
  envelope = np.sqrt(power) / max(np.sqrt(power.max()), 1e-12)
  hiss = VOCODER_HISS * envelope * rng.standard_normal(track.size)
  return np.clip(track + hiss, -1.0, 1.0).astype(np.float32)
