"""Training samplers: position in the endless training stream -> record index, as pure
functions of (seed, position) so that a stream is deterministic and resumes exactly.

:class:`WeightedPick` draws records with given probabilities (class-balanced fine-tuning,
:func:`balanced_weights`); :class:`IdentityGroups` fills each batch with groups of clips of
one identity from different videos (identity-contrastive detectors).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from havic_jax.data.records import PreparedData


def balanced_weights(labels: np.ndarray) -> np.ndarray:
  """float64 [N] sampling probabilities ∝ 1 / (count of the sample's class), summing to 1
  (each class drawn equally often, as PyTorch's WeightedRandomSampler with those weights)."""
  _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
  weights = 1.0 / counts[inverse]
  return weights / weights.sum()


@dataclasses.dataclass(frozen=True)
class WeightedPick:
  """Position -> record index drawn with ``probabilities`` (with replacement)."""

  indices: np.ndarray
  cumulative: np.ndarray

  def __call__(self, _: int, rng: np.random.Generator) -> int:
    position = np.searchsorted(self.cumulative, rng.random() * self.cumulative[-1], "right")
    return int(self.indices[min(position, len(self.indices) - 1)])


@dataclasses.dataclass(frozen=True)
class IdentityGroups:
  """Position -> record index, so that every batch of ``batch_size`` positions holds
  ``batch_size / clips_per_identity`` identities drawn at random, each with
  ``clips_per_identity`` clips from different source videos (as far as the identity has
  videos). A pure function of (seed, position): deterministic and resumable.

  videos: per identity, per video, the record indices of its clips."""

  videos: Tuple[Tuple[np.ndarray, ...], ...]
  batch_size: int
  clips_per_identity: int
  seed: int

  def __call__(self, position: int) -> int:
    batch, slot = divmod(int(position), self.batch_size)
    group, member = divmod(slot, self.clips_per_identity)
    groups = self.batch_size // self.clips_per_identity
    chosen = np.random.default_rng([self.seed, batch]).choice(
        len(self.videos), groups, replace=len(self.videos) < groups)
    videos = self.videos[chosen[group]]
    order = np.random.default_rng([self.seed, batch, group]).permutation(len(videos))
    clips = videos[order[member % len(videos)]]
    return int(clips[np.random.default_rng([self.seed, batch, group, member])
                     .integers(len(clips))])


def identity_groups(data: PreparedData, indices: np.ndarray, batch_size: int,
                    clips_per_identity: int, seed: int) -> IdentityGroups:
  """The :class:`IdentityGroups` sampler over the records ``indices``."""
  if batch_size % clips_per_identity:
    raise ValueError(f"a batch of {batch_size} does not split into groups of "
                     f"{clips_per_identity} clips per identity")
  everything, video_of = data.video_records(np.ones(len(data.index), bool))
  row_of = np.empty(data.num_records, np.int64)
  row_of[everything] = video_of
  _, identity_of = data.record_identity_codes()
  chosen = np.unique(np.asarray(indices, np.int64))
  # The chosen records grouped by identity, then by video id, in record order within.
  video_ids = np.asarray(data.index["video_id"])[row_of[chosen]]
  order = np.lexsort((chosen, video_ids, identity_of[chosen]))
  chosen, video_ids, identity = chosen[order], video_ids[order], identity_of[chosen][order]
  videos = []
  for start, stop in _runs(identity):
    starts = [start + a for a, _ in _runs(video_ids[start:stop])]
    stops = starts[1:] + [stop]
    videos.append(tuple(chosen[a:b] for a, b in zip(starts, stops)))
  return IdentityGroups(tuple(videos), batch_size, clips_per_identity, seed)


def _runs(values: np.ndarray) -> list:
  """[(start, stop)] of the runs of equal consecutive ``values``."""
  if not len(values):
    return []
  edges = np.flatnonzero(values[1:] != values[:-1]) + 1
  bounds = np.concatenate([[0], edges, [len(values)]])
  return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
