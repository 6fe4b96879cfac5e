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
  identities = data.record_identities()
  by_identity: Dict[str, Dict[str, list]] = {}
  chosen = set(int(i) for i in indices)
  for video in data.manifest["videos"]:
    clips = [i for i in range(video["first_record"], video["first_record"] + video["clips"])
             if i in chosen]
    if clips:
      by_identity.setdefault(identities[clips[0]], {})[video["video_id"]] = clips
  videos = tuple(tuple(np.asarray(c, np.int64) for _, c in sorted(v.items()))
                 for _, v in sorted(by_identity.items()))
  return IdentityGroups(videos, batch_size, clips_per_identity, seed)
