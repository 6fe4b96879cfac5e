"""Grain input pipelines over prepared ArrayRecord shards (``havic_jax.data.records``).

Training: record indices of a split -> seeded shuffle, endless repeat (or class-balanced
weighted sampling for fine-tuning) -> read and decode the clip -> audio features (fbank, spec
§1) -> masks (pretraining) or augmentations (fine-tuning, spec §11) -> this process's rows of
each global batch -> host-local batch. Every draw is seeded from the clip's position in the
global stream, so the global batches do not depend on the number of processes. Worker
processes via ``mp_prefetch``; the iterator's state (``get_state``/``set_state``, Grain's Orbax
handler) resumes it at the next batch.

Evaluation: every record of a split once, in order, padded with ``valid = 0`` examples so every
process runs the same number of batches.

Batches are dicts of NumPy arrays: ``video`` uint8 [b, F, S, S, 3] (converted to [0, 1] on the
device), ``audio`` float32 [b, T, M], and per stage ``ids_keep_video``/``ids_keep_audio`` int32,
``audio_label``/``visual_label``/``overall_label`` float32, ``valid`` float32 and
``record_index`` int32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import grain
import numpy as np

from havic_jax.data import augment, pseudo_fakes, records, samplers
from havic_jax.data.examples import ClipTransform
from havic_jax.models.masking import kept_per_group
from havic_jax.data.records import LABEL_KEYS, PreparedData
from havic_jax.models.config import ModelConfig

ENDLESS = 2 ** 62  # length of the position range of endless samplers

# The random streams of a training pipeline with seed ``seed`` are seeded ``seed`` plus these
# (fixed: a resumed or repeated run draws the same batches).
RECORDS_SEED_OFFSET = 0      # the shuffle or weighted draw of the training records
TRANSFORM_SEED_OFFSET = 1    # the masks and augmentations of ClipTransform
PSEUDO_FAKE_SEED_OFFSET = 2  # the pseudo-fake spans and donors
MIXTURE_SEED_OFFSET = 3      # the shuffle of mixture source k: MIXTURE_SEED_OFFSET + k


@dataclasses.dataclass(frozen=True)
class ReadRecord:
  """Record index -> decoded clip."""

  source: Any

  def __call__(self, index: int) -> records.ClipRecord:
    return records.decode(self.source[int(index)])


def process_shard(shard_index: Optional[int] = None, shard_count: Optional[int] = None
                  ) -> tuple[int, int]:
  """(index, count) of this process's input shard: JAX's process index and count unless
  given (tests simulate several processes this way)."""
  if shard_index is None or shard_count is None:
    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    return options.shard_index, options.shard_count
  return shard_index, shard_count


def parse_mixture(value: str) -> Tuple[Tuple[str, float], ...]:
  """``config.data.mixture`` "DIR:SHARE[,DIR:SHARE...]" -> ((DIR, SHARE), ...): prepared
  directories whose clips make up SHARE of the pretraining samples each (the training data
  the rest). "" -> ()."""
  sources = []
  for item in filter(None, (part.strip() for part in value.split(","))):
    path, _, share = item.rpartition(":")
    try:
      weight = float(share)
    except ValueError:
      weight = -1.0
    if not path or not 0.0 < weight < 1.0:
      raise ValueError(f"data.mixture: {item!r} is not DIR:SHARE with 0 < SHARE < 1")
    sources.append((path, weight))
  if sum(w for _, w in sources) >= 1.0:
    raise ValueError(f"data.mixture: the shares {[w for _, w in sources]} leave nothing of the "
                     f"training data; they must sum to less than 1")
  return tuple(sources)


def _shuffled(indices: np.ndarray, seed: int) -> grain.MapDataset:
  """An endless seeded shuffle of ``indices`` (one permutation per epoch)."""
  return grain.MapDataset.source(indices).shuffle(seed=seed).repeat(None)


class ProcessRows(grain.MapDataset):
  """This process's rows of every global batch of an endless global stream.

  Position ``i`` of this dataset is row ``i % local_batch_size`` of this process's block of
  global batch ``i // local_batch_size``: global position ``step · global_batch +
  shard_index · local_batch_size + row``. Every random choice upstream (``random_map``) is
  seeded from that global position, so the global batch of a step, row by row, is the same on
  any number of processes."""

  def __init__(self, parent: grain.MapDataset, local_batch_size: int, shard_index: int,
               shard_count: int):
    super().__init__(parent)
    self._local, self._index, self._count = local_batch_size, shard_index, shard_count
    self._length = len(parent) // shard_count // local_batch_size * local_batch_size

  def __len__(self) -> int:
    return self._length

  def _global_position(self, index: int) -> int:
    step, row = divmod(int(index), self._local)
    return (step * self._count + self._index) * self._local + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_position(index)]

  def _getitems(self, indices: Sequence[int]):
    positions = [self._global_position(i) for i in indices]
    return self._parent._getitems(positions)  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f"ProcessRows(shard {self._index} of {self._count}, {self._local} rows per batch)"


def training_records(data: PreparedData, indices: np.ndarray, global_batch_size: int,
                     seed: int, *, balanced: bool = False, clips_per_identity: int = 0,
                     mixture: Sequence[Tuple[PreparedData, float]] = ()) -> grain.MapDataset:
  """The endless, seeded global stream of decoded training clips (before featurising), the
  same on every process: position p is row p % ``global_batch_size`` of global batch
  p // ``global_batch_size``.

  The records ``indices`` shuffled and repeated; ``balanced`` draws them with probability ∝
  1/count of their ``overall_label``, with replacement; ``clips_per_identity`` > 0 draws every
  global batch as identities × that many clips of different videos
  (``samplers.IdentityGroups``: consecutive positions, so a process's rows hold whole groups
  when its batch is a multiple of ``clips_per_identity``). ``mixture`` ((prepared data,
  share), ...) mixes in every clip of other prepared data, each making up its share of the
  clips (a fixed interleaving by share; pretraining, e.g. out-of-domain clips without faces).
  """
  records_seed = seed + RECORDS_SEED_OFFSET
  if clips_per_identity:
    ds = grain.MapDataset.range(ENDLESS).map(samplers.identity_groups(
        data, indices, global_batch_size, clips_per_identity, records_seed))
  elif balanced:
    probabilities = samplers.balanced_weights(data.record_labels()[indices])
    ds = grain.MapDataset.range(len(indices)).repeat(None).random_map(
        samplers.WeightedPick(indices, np.cumsum(probabilities)), seed=records_seed)
  else:
    ds = _shuffled(indices, records_seed)
  ds = ds.map(ReadRecord(data.source()))
  if mixture:
    extra = [_shuffled(other.split_indices(None), seed + MIXTURE_SEED_OFFSET + k)
             .map(ReadRecord(other.source())) for k, (other, _) in enumerate(mixture)]
    shares = [share for _, share in mixture]
    ds = grain.MapDataset.mix([ds] + extra, [1.0 - sum(shares)] + shares)
  return ds


def training_dataset(data: PreparedData,
                     split: Optional[str],
                     model_config: ModelConfig,
                     stage: str,
                     local_batch_size: int,
                     seed: int,
                     *,
                     balanced: bool = False,
                     video_mask_ratio: float = 0.0,
                     audio_mask_ratio: float = 0.0,
                     augmentation: Optional[augment.Options] = None,
                     workers: int = 0,
                     read_options: Optional[grain.ReadOptions] = None,
                     real_only: bool = False,
                     identities: Optional[Mapping[str, int]] = None,
                     clips_per_identity: int = 0,
                     pseudo_fake_options: Optional[pseudo_fakes.PseudoFakeOptions] = None,
                     mixture: Sequence[Tuple[PreparedData, float]] = (),
                     shard_index: Optional[int] = None,
                     shard_count: Optional[int] = None) -> grain.IterDataset:
  """Endless, seeded, per-process training batches of ``local_batch_size`` examples: this
  process's rows (``ProcessRows``) of global batches of ``local_batch_size`` × shard count.

  The same seed gives the same global batches, row by row, whatever the shard count: every
  clip, mask, augmentation, pseudo-fake and donor is drawn from its global position. Shards
  are disjoint, and together cover each epoch's permutation. The clips of ``split``
  (``real_only``: its real clips) come from :func:`training_records` (``balanced``,
  ``clips_per_identity``, ``mixture``: pretraining only, not with identity groups);
  ``augmentation`` picks the fine-tuning augmentations (None: none); ``identities`` adds each
  clip's ``identity`` id; ``pseudo_fake_options`` turns clips into temporally-local
  pseudo-fakes (``havic_jax.data.pseudo_fakes``) before featurising
  (``havic_jax.data.examples``). ``workers`` > 0 decodes in that many processes;
  ``read_options``: the threads and read-ahead batches of each (None: Grain's defaults).
  """
  if stage not in ("pretrain", "finetune"):
    raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
  if mixture and (stage != "pretrain" or clips_per_identity):
    raise ValueError("data.mixture mixes data into HAVIC pretraining only (not fine-tuning, not "
                     "identity-grouped batches)")
  indices = data.split_indices(split)
  if real_only:
    indices = data.real_indices(indices)
  index, count = process_shard(shard_index, shard_count)
  if clips_per_identity and local_batch_size % clips_per_identity:
    raise ValueError(f"a process batch of {local_batch_size} does not hold whole groups of "
                     f"{clips_per_identity} clips per identity")
  ds = training_records(data, indices, local_batch_size * count, seed, balanced=balanced,
                        clips_per_identity=clips_per_identity, mixture=mixture)
  if pseudo_fake_options is not None:
    donor = pseudo_fakes.RecordDonor(data.source(), indices)
    ds = ds.random_map(pseudo_fakes.PseudoFakeTransform(donor, pseudo_fake_options),
                       seed=seed + PSEUDO_FAKE_SEED_OFFSET)
  transform = ClipTransform(model_config, stage, video_mask_ratio, audio_mask_ratio, augmentation,
                            identities)
  ds = ds.random_map(transform, seed=seed + TRANSFORM_SEED_OFFSET)
  ds = ProcessRows(ds, local_batch_size, index, count)
  ds = ds.batch(local_batch_size, drop_remainder=True).to_iter_dataset(read_options)
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return ds


@dataclasses.dataclass(frozen=True)
class EvalTransform:
  """(position, record index) -> eval example; positions past the split are padding."""

  source: Any
  indices: np.ndarray
  transform: ClipTransform

  def __call__(self, position: int) -> Dict[str, np.ndarray]:
    valid = position < len(self.indices)
    record_index = int(self.indices[position if valid else 0])
    example = self.transform(records.decode(self.source[record_index]), None)
    example.update(valid=np.float32(valid), record_index=np.int32(record_index))
    return example


def eval_dataset(data: PreparedData, split: Optional[str], model_config: ModelConfig,
                 local_batch_size: int, *, workers: int = 0,
                 read_options: Optional[grain.ReadOptions] = None,
                 shard_index: Optional[int] = None,
                 shard_count: Optional[int] = None) -> grain.IterDataset:
  """Every record of ``split`` once, in order, as this process's batches; padded (``valid`` =
  0) to a multiple of the global batch so all processes run the same number of batches;
  ``workers`` and ``read_options`` as in :func:`training_dataset`."""
  indices = data.split_indices(split)
  index, count = process_shard(shard_index, shard_count)
  global_batch = local_batch_size * count
  padded = -(-len(indices) // global_batch) * global_batch
  ds = grain.MapDataset.range(padded)[index::count]
  ds = ds.map(EvalTransform(data.source(), indices, ClipTransform(model_config, "eval")))
  ds = ds.batch(local_batch_size).to_iter_dataset(read_options)
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return ds


def example_spec(model_config: ModelConfig, stage: str, video_mask_ratio: float = 0.0,
                 audio_mask_ratio: float = 0.0) -> Dict[str, tuple]:
  """(shape without batch, dtype) of every key a pipeline yields for ``stage``."""
  spec = {
      "video": (
          (model_config.num_frames, model_config.image_size, model_config.image_size, 3), np.uint8),
      "audio": ((model_config.audio_frames, model_config.mel_bins), np.float32)
  }
  if stage == "pretrain":
    keep_v = kept_per_group(model_config.video_grid**2,
                            video_mask_ratio) * model_config.video_time_tokens
    keep_a = kept_per_group(model_config.audio_segment_tokens,
                            audio_mask_ratio) * model_config.num_segments
    spec.update(ids_keep_video=((keep_v,), np.int32), ids_keep_audio=((keep_a,), np.int32))
  else:
    spec.update({key: ((), np.float32) for key in LABEL_KEYS})
  if stage == "eval":
    spec.update(valid=((), np.float32), record_index=((), np.int32))
  return spec
