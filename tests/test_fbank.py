"""Kaldi fbank and model audio input against torchaudio goldens (spec §1)."""

import pathlib

import numpy as np
import pytest

from havic_jax.media import fbank

GOLDEN = np.load(pathlib.Path(__file__).parent / "data" / "fbank_golden.npz")
NAMES = ("tone", "chirp", "noise", "speechy", "short")
DEAD_FILTER = 3  # the 128-bin, 16 kHz filter that no FFT bin falls into
# The goldens are torchaudio's float32 run. Where a mel energy is below e^-10 (4.5e-5) of a
# frame whose peak bin holds ~1e4, float32 rounding of the reference (pre-emphasis, window,
# MKL FFT) moves the log by up to ~6e-3 (torchaudio in float64 differs from its float32
# golden that much on `chirp`), so 1e-3 holds above that floor and 1e-2 everywhere.
FLOOR_LOG = -10.0
TOL, FLOOR_TOL = 1e-3, 1e-2


def _max_diffs(ours, golden, above):
  diff = np.abs(ours.astype(np.float64) - golden)
  return diff.max(), diff[above].max()


@pytest.mark.parametrize("name", NAMES)
def test_kaldi_fbank_matches_torchaudio(name):
  golden = GOLDEN[f"{name}.fbank"]
  ours = fbank.kaldi_fbank(GOLDEN[f"{name}.wave"])
  assert ours.shape == golden.shape and ours.dtype == np.float32
  everywhere, above_floor = _max_diffs(ours, golden, golden >= FLOOR_LOG)
  print(f"{name}.fbank max|diff| {everywhere:.2e} (above e^{FLOOR_LOG:g}: {above_floor:.2e})")
  assert above_floor <= TOL
  assert everywhere <= FLOOR_TOL


@pytest.mark.parametrize("name", NAMES)
def test_audio_features_match_golden_input(name):
  golden = GOLDEN[f"{name}.input"]
  ours = fbank.audio_features(GOLDEN[f"{name}.wave"])
  assert ours.shape == (fbank.TARGET_FRAMES, fbank.NUM_MEL_BINS) and ours.dtype == np.float32
  floor = (FLOOR_LOG - fbank.FBANK_MEAN) / fbank.FBANK_STD
  everywhere, above_floor = _max_diffs(ours, golden, golden >= floor)
  print(f"{name}.input max|diff| {everywhere:.2e} (above floor: {above_floor:.2e})")
  assert above_floor <= TOL
  assert everywhere <= FLOOR_TOL
  # From the golden fbank, interpolation and normalisation alone agree to float32 rounding.
  resampled = fbank.normalise(fbank.interpolate_frames(GOLDEN[f"{name}.fbank"]))
  np.testing.assert_allclose(resampled, golden, rtol=0, atol=1e-5)


def test_dead_filter_is_log_eps():
  log_eps = np.float32(np.log(np.finfo(np.float32).eps))
  assert log_eps == pytest.approx(-15.9424, abs=1e-4)
  banks = fbank.mel_banks()
  assert banks.shape == (fbank.NUM_MEL_BINS, fbank.FFT_SIZE // 2 + 1)
  assert np.flatnonzero(banks.sum(axis=1) == 0).tolist() == [DEAD_FILTER]
  assert np.all(banks[:, -1] == 0)  # Nyquist bin unused
  for name in NAMES:
    ours = fbank.kaldi_fbank(GOLDEN[f"{name}.wave"])
    assert np.all(ours[:, DEAD_FILTER] == log_eps)
    assert np.all(GOLDEN[f"{name}.fbank"][:, DEAD_FILTER] == log_eps)


def test_frame_count():
  assert fbank.frame_geometry() == (fbank.FRAME_LENGTH, fbank.FRAME_SHIFT, fbank.FFT_SIZE)
  assert (fbank.FRAME_LENGTH, fbank.FRAME_SHIFT, fbank.FFT_SIZE) == (400, 160, 512)
  assert fbank.frame_count(51200) == 318 and fbank.frame_count(16000) == 98
  rng = np.random.default_rng(0)
  for n in (400, 559, 560, 16000, 51200):
    out = fbank.kaldi_fbank(rng.uniform(-1, 1, n).astype(np.float32))
    assert out.shape == (1 + (n - 400) // 160, 128)


def _reference_interpolate(x, size):
  """Per column np.interp at PyTorch's align_corners=False source positions."""
  src = np.clip((np.arange(size) + 0.5) * x.shape[0] / size - 0.5, 0, None)
  return np.stack([np.interp(src, np.arange(x.shape[0]), col) for col in x.T], axis=1)


@pytest.mark.parametrize("length,size", [(318, 1024), (98, 1024), (7, 3), (5, 16), (1, 4)])
def test_interpolate_frames(length, size):
  x = np.random.default_rng(length).standard_normal((length, 6)).astype(np.float32)
  out = fbank.interpolate_frames(x, size)
  assert out.shape == (size, 6) and out.dtype == np.float32
  np.testing.assert_allclose(out, _reference_interpolate(x, size), rtol=0, atol=1e-6)


def test_interpolate_frames_identity():
  x = np.random.default_rng(1).standard_normal((318, 128)).astype(np.float32)
  np.testing.assert_array_equal(fbank.interpolate_frames(x, 318), x)


def test_normalise():
  x = np.array([-6.9960, -6.9960 + 3.1205], np.float32)
  np.testing.assert_allclose(fbank.normalise(x), [0.0, 1.0], atol=1e-6)


def test_too_short_or_not_mono_raises():
  with pytest.raises(ValueError, match=r"399 samples.*at least 400"):
    fbank.kaldi_fbank(np.zeros(399, np.float32))
  with pytest.raises(ValueError, match="1-D"):
    fbank.kaldi_fbank(np.zeros((2, 16000), np.float32))
