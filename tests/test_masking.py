"""Masking invariants: counts, tube structure, per-segment counts, reproducibility."""

import numpy as np

from havic_jax.models import masking
from havic_jax.models.config import ModelConfig

CFG = ModelConfig()


def masks(seed, batch_size=4):
  return masking.pretraining_mask_batch(np.random.default_rng(seed), batch_size, CFG, 0.9,
                                       0.8125)


def test_kept_counts():
  assert masking.kept_per_group(196, 0.9) == 19
  assert masking.kept_per_group(64, 0.8125) == 12
  ids_v, ids_a = masks(0)
  assert ids_v.shape == (4, 152) and ids_a.shape == (4, 96)
  assert ids_v.dtype == np.int32 and ids_a.dtype == np.int32


def test_tube_mask_keeps_the_same_spatial_set_in_every_time_slice():
  ids_v = np.asarray(masks(1)[0]).reshape(4, 8, 19)
  for b in range(4):
    for t in range(8):
      assert np.all((ids_v[b, t] >= 196 * t) & (ids_v[b, t] < 196 * (t + 1)))
      np.testing.assert_array_equal(ids_v[b, t] - 196 * t, ids_v[b, 0])
    assert len(set(ids_v[b, 0])) == 19
  # Different samples draw different sets.
  assert len({tuple(sorted(ids_v[b, 0])) for b in range(4)}) == 4


def test_audio_mask_keeps_twelve_distinct_tokens_per_segment():
  ids_a = np.asarray(masks(2)[1]).reshape(4, 8, 12)
  for b in range(4):
    segment_sets = []
    for s in range(8):
      assert np.all((ids_a[b, s] >= 64 * s) & (ids_a[b, s] < 64 * (s + 1)))
      assert len(set(ids_a[b, s])) == 12
      segment_sets.append(tuple(sorted(ids_a[b, s] - 64 * s)))
    assert len(set(segment_sets)) > 1  # segments are masked independently


def test_masks_are_a_function_of_the_generator():
  for a, b in zip(masks(3), masks(3)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(masks(3)[0], masks(4)[0])
  # Kept indices are in random order, not sorted.
  ids_v = np.asarray(masks(5)[0])
  assert any(np.any(np.diff(row[:19]) < 0) for row in ids_v)


def test_kept_fraction_is_uniform_over_positions():
  ids_v = np.asarray(masks(6, batch_size=512)[0])[:, :19]
  counts = np.bincount(ids_v.reshape(-1), minlength=196)
  expected = 512 * 19 / 196  # about 49.6 per position
  assert counts.min() > 0.4 * expected and counts.max() < 1.8 * expected
