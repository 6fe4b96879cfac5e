"""Temporally-local pseudo-fakes: a fine-tuning transform that splices in another clip's span.

As in "Detecting Audio-Visual Deepfakes with Fine-Grained Inconsistencies": with probability
``probability`` a random-length span of a clip's video frames, of its audio, or of both (one of
the three uniformly) is replaced by the time-aligned span of another clip (the donor), and the
clip is labelled fake in the modalities that changed. Time is counted in units of one video frame:
a 3.2 s clip of 16 frames (5 fps) with 16 kHz audio has 16 units of 3200 audio samples each.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import grain
import numpy as np

from havic_jax.data import records
from havic_jax.data.records import LABEL_KEYS

DONOR_TRIES = 10     # donor draws before giving up on finding a clip other than the input

VIDEO, AUDIO, BOTH = "video", "audio", "both"
MODALITIES = (VIDEO, AUDIO, BOTH)  # drawn uniformly
CATEGORIES = {VIDEO: "pseudo_fake_video", AUDIO: "pseudo_fake_audio", BOTH: "pseudo_fake_both"}


@dataclasses.dataclass(frozen=True)
class PseudoFakeOptions:
  """``probability`` of making a pseudo-fake; the span covers between max(``min_units``,
  round(``r_min``·n)) and round(``r_max``·n) of a clip's n units, both ends included (Python's
  ``round``: halves go to the even integer). Config ``pseudo_fakes`` (``configs.common``)
  holds the values the fine-grained detector trains with."""
  probability: float
  r_min: float
  r_max: float
  min_units: int

  def __post_init__(self):
    if not 0 <= self.probability <= 1:
      raise ValueError(f"probability must lie in [0, 1], got {self.probability}")
    if not 0 <= self.r_min <= self.r_max <= 1:
      raise ValueError(f"want 0 <= r_min <= r_max <= 1, got r_min {self.r_min}, "
                       f"r_max {self.r_max}")
    if self.min_units < 1:
      raise ValueError(f"min_units must be at least 1, got {self.min_units}")

  def span_bounds(self, num_units: int) -> Tuple[int, int]:
    """(shortest, longest) span in units for a clip of ``num_units`` units, both included."""
    shortest = max(self.min_units, round(self.r_min * num_units))
    longest = round(self.r_max * num_units)
    if shortest > longest:
      raise ValueError(f"a clip of {num_units} units has no span of {shortest} to {longest} "
                       f"units (r_min {self.r_min}, r_max {self.r_max}, min_units "
                       f"{self.min_units})")
    return shortest, longest


@dataclasses.dataclass(frozen=True)
class PseudoFake:
  """What was replaced: ``modality`` (one of MODALITIES) over units [``start``, ``end``), i.e.
  frames [start, end) and audio samples [start·spu, end·spu) with spu samples per unit."""
  modality: str
  start: int
  end: int


def draw_pseudo_fake(rng: np.random.Generator, num_units: int,
                     options: PseudoFakeOptions) -> Optional[PseudoFake]:
  """With probability ``options.probability``, a uniform modality, a span length uniform in
  ``options.span_bounds(num_units)`` and a start uniform among those that fit; otherwise None."""
  if rng.random() >= options.probability:
    return None
  modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
  shortest, longest = options.span_bounds(num_units)
  length = int(rng.integers(shortest, longest + 1))
  start = int(rng.integers(0, num_units - length + 1))
  return PseudoFake(modality, start, start + length)


def samples_per_unit(frames: np.ndarray, audio: np.ndarray) -> int:
  """Audio samples per video frame of a clip: S // F for frames [F, H, W, 3] and audio [S].
  Raises ValueError naming the shapes unless S is a positive multiple of F."""
  num_frames, num_samples = frames.shape[0], audio.shape[0]
  if num_frames == 0 or num_samples == 0 or num_samples % num_frames:
    raise ValueError(f"audio {audio.shape} is not a whole number of samples per frame of "
                     f"frames {frames.shape}")
  return num_samples // num_frames


def apply_pseudo_fake(frames: np.ndarray, audio: np.ndarray, labels: Mapping[str, int],
                      donor_frames: np.ndarray, donor_audio: np.ndarray, fake: PseudoFake
                      ) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
  """Copies ``fake``'s span from the donor into new arrays at the same positions.

  frames / donor_frames: uint8 [F, H, W, 3]; audio / donor_audio: int16 [S], S a multiple of F;
  labels: ``audio_label``, ``visual_label``, ``overall_label`` (1 = fake). Returns (frames,
  audio, labels): new arrays of the input shapes and int labels, each the input's OR the change
  (video → visual_label, audio → audio_label, both → both; overall_label 1). The inputs are left
  as they are.
  """
  frames, audio = np.asarray(frames), np.asarray(audio)
  donor_frames, donor_audio = np.asarray(donor_frames), np.asarray(donor_audio)
  if frames.ndim != 4 or audio.ndim != 1:
    raise ValueError(f"want frames [F, H, W, 3] and audio [S], got {frames.shape} and "
                     f"{audio.shape}")
  if donor_frames.shape != frames.shape or donor_audio.shape != audio.shape:
    raise ValueError(f"donor frames {donor_frames.shape} and audio {donor_audio.shape} differ "
                     f"from the clip's {frames.shape} and {audio.shape}")
  spu = samples_per_unit(frames, audio)
  if fake.modality not in MODALITIES or not 0 <= fake.start < fake.end <= frames.shape[0]:
    raise ValueError(f"{fake} is not a span of the {frames.shape[0]} frames in {MODALITIES}")
  frames, audio = frames.copy(), audio.copy()
  video_changed = fake.modality in (VIDEO, BOTH)
  audio_changed = fake.modality in (AUDIO, BOTH)
  if video_changed:
    frames[fake.start:fake.end] = donor_frames[fake.start:fake.end]
  if audio_changed:
    audio[fake.start * spu:fake.end * spu] = donor_audio[fake.start * spu:fake.end * spu]
  new_labels = {"audio_label": int(bool(labels["audio_label"]) or audio_changed),
                "visual_label": int(bool(labels["visual_label"]) or video_changed),
                "overall_label": 1}
  return frames, audio, new_labels


@dataclasses.dataclass(frozen=True)
class RecordDonor:
  """rng → a decoded clip drawn uniformly from ``indices`` of ``source`` (serialised records
  indexed like ``PreparedData.source()``)."""
  source: Any
  indices: np.ndarray

  def __call__(self, rng: np.random.Generator) -> records.ClipRecord:
    return records.decode(self.source[int(self.indices[rng.integers(len(self.indices))])])


@dataclasses.dataclass(frozen=True)
class PseudoFakeTransform(grain.transforms.RandomMap):
  """Grain random map: decoded clip → the clip, or a pseudo-fake of it (before featurisation).

  ``donor(rng)`` returns another clip of the same frame and audio shapes; it is only called when a
  pseudo-fake is drawn, and again (up to DONOR_TRIES draws) while it returns the input clip itself
  (same ``video_id`` and ``clip_start``); if every draw does, the clip is returned unchanged. A
  pseudo-fake's category is CATEGORIES[modality].
  """
  donor: Callable[[np.random.Generator], records.ClipRecord]
  options: PseudoFakeOptions

  def random_map(self, clip: records.ClipRecord, rng: np.random.Generator
                 ) -> records.ClipRecord:
    samples_per_unit(clip.frames, clip.audio)
    fake = draw_pseudo_fake(rng, clip.frames.shape[0], self.options)
    if fake is None:
      return clip
    for _ in range(DONOR_TRIES):
      donor = self.donor(rng)
      if (donor.video_id, donor.clip_start) != (clip.video_id, clip.clip_start):
        break
    else:
      return clip
    labels = {key: getattr(clip, key) for key in LABEL_KEYS}
    frames, audio, labels = apply_pseudo_fake(clip.frames, clip.audio, labels, donor.frames,
                                              donor.audio, fake)
    return dataclasses.replace(clip, frames=frames, audio=audio, category=CATEGORIES[fake.modality],
                               **labels)
