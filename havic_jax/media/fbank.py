"""Kaldi-compatible log-mel filterbank and the model's audio input, in NumPy (spec §1).

``kaldi_fbank`` equals ``torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True,
sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
frame_shift=10)``; ``audio_features`` turns a 16 kHz mono waveform into the [1024, 128] input.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000  # Hz
FRAME_LENGTH_MS = 25
FRAME_SHIFT_MS = 10
PREEMPHASIS = 0.97
NUM_MEL_BINS = 128
LOW_FREQ = 20.0  # Hz, lower edge of the first mel filter
HIGH_FREQ = SAMPLE_RATE / 2  # Hz (8000), Kaldi's default: the Nyquist frequency
TARGET_FRAMES = 1024
FBANK_MEAN = -6.9960
FBANK_STD = 3.1205
LOG_FLOOR = float(np.finfo(np.float32).eps)  # log(LOG_FLOOR) = -15.9424


def frame_geometry(sample_rate: int = SAMPLE_RATE) -> tuple[int, int, int]:
  """(frame length, frame shift, FFT size) in samples: 25 ms, 10 ms, next power of two."""
  frame_length = sample_rate * FRAME_LENGTH_MS // 1000
  frame_shift = sample_rate * FRAME_SHIFT_MS // 1000
  fft_size = 1 << (frame_length - 1).bit_length()
  return frame_length, frame_shift, fft_size


FRAME_LENGTH, FRAME_SHIFT, FFT_SIZE = frame_geometry(SAMPLE_RATE)  # 400, 160, 512


def frame_count(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
  """Frames of ``snip_edges`` framing: 1 + (N − 400) // 160 at 16 kHz (0 if N < 400)."""
  frame_length, frame_shift, _ = frame_geometry(sample_rate)
  if num_samples < frame_length:
    return 0
  return 1 + (num_samples - frame_length) // frame_shift


def _mel(freq):
  """HTK mel scale: 1127 ln(1 + f / 700), f in Hz."""
  return 1127.0 * np.log1p(np.asarray(freq, np.float64) / 700.0)


def mel_banks(num_mel_bins: int = NUM_MEL_BINS, fft_size: int = FFT_SIZE,
              sample_rate: int = SAMPLE_RATE, low_freq: float = LOW_FREQ,
              high_freq: float = HIGH_FREQ) -> np.ndarray:
  """Kaldi's triangular mel filters: [num_mel_bins, fft_size // 2 + 1] float64.

  Filter m rises linearly in mel from edge m to its centre (edge m + 1) and falls to edge m + 2,
  the num_mel_bins + 2 edges equally spaced in mel between ``low_freq`` and ``high_freq``. Each
  FFT bin k (frequency k·sample_rate/fft_size) is weighted at its mel value. The Nyquist bin gets
  weight 0, as in Kaldi; a filter narrower than one bin gets none at all (16 kHz, 128 bins:
  filter 3).
  """
  edges = np.linspace(_mel(low_freq), _mel(high_freq), num_mel_bins + 2)
  left, center, right = (edges[i:i + num_mel_bins, None] for i in range(3))
  bin_mel = _mel(np.arange(fft_size // 2) * (sample_rate / fft_size))[None]
  rising = (bin_mel - left) / (center - left)
  falling = (right - bin_mel) / (right - center)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  return np.pad(weights, ((0, 0), (0, 1)))


def kaldi_fbank(wave: np.ndarray, sample_rate: int = SAMPLE_RATE,
                num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
  """Log-mel filterbank of a mono waveform [N] on the float [-1, 1] scale.

  Per frame (``snip_edges``: only whole frames): subtract the frame mean, pre-emphasise
  (x[i] -= 0.97·x[i−1], x[−1] := x[0]), symmetric Hann window, zero-pad to the FFT size, power
  spectrum, mel filters (``mel_banks``), natural log floored at float32 eps. No dither, no energy.

  Returns [1 + (N − 400) // 160, num_mel_bins] float32 (16 kHz).
  """
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise ValueError(f"expected a 1-D mono waveform, got shape {wave.shape}")
  frame_length, frame_shift, fft_size = frame_geometry(sample_rate)
  if frame_count(wave.shape[0], sample_rate) == 0:
    raise ValueError(f"waveform has {wave.shape[0]} samples; one {FRAME_LENGTH_MS} ms frame at "
                     f"{sample_rate} Hz needs at least {frame_length}")
  frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64), frame_length)
  frames = frames[::frame_shift]  # [frames, frame_length]
  frames = frames - frames.mean(axis=1, keepdims=True)
  previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  frames = frames - PREEMPHASIS * previous
  n = np.arange(frame_length)
  frames = frames * (0.5 - 0.5 * np.cos(2.0 * np.pi * n / (frame_length - 1)))
  power = np.abs(np.fft.rfft(frames, n=fft_size, axis=1)) ** 2  # [frames, fft_size // 2 + 1]
  energies = power @ mel_banks(num_mel_bins, fft_size, sample_rate, LOW_FREQ, sample_rate / 2).T
  return np.log(np.maximum(energies, LOG_FLOOR)).astype(np.float32)


def interpolate_frames(fbank: np.ndarray, num_frames: int = TARGET_FRAMES) -> np.ndarray:
  """Linear resampling of [T, F] along time to [num_frames, F], same dtype.

  PyTorch ``F.interpolate(mode="linear", align_corners=False)``: output frame i reads source
  position (i + 0.5)·T/num_frames − 0.5, clamped at 0, blending its two neighbouring frames
  (the upper index clamped at T − 1).
  """
  length = fbank.shape[0]
  position = np.maximum((np.arange(num_frames) + 0.5) * (length / num_frames) - 0.5, 0.0)
  lower = position.astype(np.int64)  # floor; position < T − 0.5
  upper = np.minimum(lower + 1, length - 1)
  weight = (position - lower)[:, None]
  blended = (1.0 - weight) * fbank[lower] + weight * fbank[upper]
  return blended.astype(fbank.dtype)


def normalise(fbank: np.ndarray) -> np.ndarray:
  """(fbank − (−6.9960)) / 3.1205, the release's dataset statistics (no factor 2)."""
  return (fbank - FBANK_MEAN) / FBANK_STD


def log_mel(wave: np.ndarray, num_frames: int = TARGET_FRAMES,
            num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
  """16 kHz mono waveform [N] -> un-normalised log-mel [num_frames, num_mel_bins] float32:
  subtracts the waveform mean, then ``kaldi_fbank`` and ``interpolate_frames``."""
  wave = np.asarray(wave, np.float32)
  return interpolate_frames(kaldi_fbank(wave - wave.mean(), num_mel_bins=num_mel_bins),
                            num_frames)


def audio_features(wave: np.ndarray, num_frames: int = TARGET_FRAMES,
                   num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
  """The model's audio input from a 16 kHz mono waveform [N]: ``normalise(log_mel(wave))``,
  [1024, 128] float32 by default."""
  return normalise(log_mel(wave, num_frames, num_mel_bins)).astype(np.float32)
