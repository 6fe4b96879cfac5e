"""Grain input pipelines over prepared ArrayRecord shards (``data_pipelines.prepare``).

Training: record indices of a split -> seeded shuffle, endless repeat (or class-balanced
weighted sampling for fine-tuning) -> this process's shard -> read and decode the clip ->
audio features (fbank, spec §1) -> masks (pretraining) or augmentations (fine-tuning, spec §11)
-> host-local batch, with worker processes via ``mp_prefetch``. The iterator's state
(``get_state``/``set_state``, Grain's Orbax handler) resumes it at the next batch.

Evaluation: every record of a split once, in order, padded with ``valid = 0`` examples so every
process runs the same number of batches.

Batches are dicts of NumPy arrays: ``video`` uint8 [b, F, S, S, 3] (converted to [0, 1] on the
device), ``audio`` float32 [b, T, M], and per stage ``ids_keep_video``/``ids_keep_audio`` int32,
``audio_label``/``visual_label``/``overall_label`` float32, ``valid`` float32 and
``record_index`` int32.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import grain
import numpy as np

from havic_jax.data import augment, pseudo_fakes, records
from havic_jax import storage
from havic_jax.models.masking import host_pretraining_masks, kept_per_group
from havic_jax.media.clips import INT16_SCALE
from havic_jax.media.fbank import audio_features as audio_features_of_wave
from havic_jax.media.fbank import log_mel, normalise
from havic_jax.models.config import ModelConfig
from havic_jax.data.records import LABEL_KEYS

ENDLESS = 2 ** 62  # length of the position range of endless samplers

MANIFEST = "manifest.json"


class DataError(ValueError):
  """Prepared data that is missing or does not fit the request."""


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A directory written by ``data_pipelines.prepare``: its manifest and shard paths."""

  directory: pathlib.Path
  manifest: Mapping[str, Any]

  @property
  def shard_paths(self) -> list[str]:
    return [str(self.directory / shard["file"]) for shard in self.manifest["shards"]]

  @property
  def num_records(self) -> int:
    return int(sum(shard["records"] for shard in self.manifest["shards"]))

  def source(self) -> grain.sources.ArrayRecordDataSource:
    """Random access to the serialised records, indexed across shards in manifest order."""
    return grain.sources.ArrayRecordDataSource(self.shard_paths)

  def split_indices(self, split: Optional[str]) -> np.ndarray:
    """Record indices (int64, ascending) of the clips of ``split``'s videos (None: all)."""
    videos = self.manifest["videos"]
    if split is not None:
      if split not in self.manifest["splits"]:
        raise DataError(f"{self.directory / MANIFEST}: no split {split!r}; it has "
                        f"{sorted(self.manifest['splits'])}")
      wanted = set(self.manifest["splits"][split])
      videos = [v for v in videos if v["video_id"] in wanted]
    if not videos:
      raise DataError(f"{self.directory / MANIFEST}: split {split!r} has no prepared clips")
    return np.sort(np.concatenate([np.arange(v["first_record"], v["first_record"] + v["clips"])
                                   for v in videos]))

  def record_labels(self, key: str = "overall_label") -> np.ndarray:
    """int8 [num_records]: ``key`` of every record, from the manifest's video table."""
    labels = np.zeros(self.num_records, np.int8)
    for video in self.manifest["videos"]:
      labels[video["first_record"]:video["first_record"] + video["clips"]] = video[key]
    return labels


  def record_identities(self) -> np.ndarray:
    """object [num_records]: the identity (speaker / subject id) of every record's video."""
    identities = np.empty(self.num_records, object)
    for video in self.manifest["videos"]:
      identities[video["first_record"]:video["first_record"] + video["clips"]] = video["identity"]
    return identities

  def identity_vocabulary(self, indices: np.ndarray) -> Dict[str, int]:
    """{identity: id} over the records ``indices``, ids 0.. in sorted identity order."""
    names = sorted(set(self.record_identities()[indices]))
    if not names or names == [""]:
      raise DataError(f"{self.directory / MANIFEST}: the records carry no identities; this "
                      f"detector needs a dataset with speaker / subject ids")
    return {name: index for index, name in enumerate(names)}

  def real_indices(self, indices: np.ndarray) -> np.ndarray:
    """The records of ``indices`` whose video is real (``overall_label`` 0)."""
    real = indices[self.record_labels()[indices] == 0]
    if not len(real):
      raise DataError(f"{self.directory / MANIFEST}: the requested split has no real clips")
    return real


def open_prepared(directory: str) -> PreparedData:
  """Reads ``directory/manifest.json`` (a local path: ArrayRecord reads files); errors say how
  to make one."""
  path = pathlib.Path(storage.local_only(directory, "prepared data"))
  manifest_path = path / MANIFEST
  if not manifest_path.is_file():
    raise DataError(f"{manifest_path}: missing; prepare the data first with "
                    f"`python -m data_pipelines.prepare --dataset=... --input=... "
                    f"--output={directory}`")
  manifest = json.loads(manifest_path.read_text())
  if manifest.get("format_version") != records.FORMAT_VERSION:
    raise DataError(f"{manifest_path}: format version {manifest.get('format_version')}, this "
                    f"havic_jax reads {records.FORMAT_VERSION}; prepare the data again")
  data = PreparedData(path, manifest)
  missing = [p for p in data.shard_paths if not pathlib.Path(p).is_file()]
  if missing:
    raise DataError(f"{directory}: shard(s) listed in {MANIFEST} are missing: {missing[:3]}; "
                    f"re-run the preparation command to finish them")
  return data


def audio_features(wave: np.ndarray, cfg: ModelConfig, rng: Optional[np.random.Generator] = None,
                   options: augment.Options = augment.Options()) -> np.ndarray:
  """int16 [S] 16 kHz clip audio -> float32 [audio_frames, mel_bins] model input (spec §1).

  With ``rng`` and ``options.audio`` (fine-tuning), the spec §11 audio augmentation:
  frequency/time masks on the fbank before normalisation, noise after it."""
  wave = wave.astype(np.float32) / INT16_SCALE
  if rng is None or not options.audio:
    return audio_features_of_wave(wave, cfg.audio_frames, cfg.mel_bins)
  fbank = augment.mask_fbank(rng, log_mel(wave, cfg.audio_frames, cfg.mel_bins),
                             options.freq_mask, options.time_mask)
  return augment.add_noise(rng, normalise(fbank).astype(np.float32))


def video_input(frames: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """uint8 [F, H, W, 3] crops -> uint8 [num_frames, image_size, image_size, 3] (resized with
  area averaging when the model is smaller than the stored crops)."""
  if frames.shape[0] != cfg.num_frames:
    raise DataError(f"records hold {frames.shape[0]} frames, the model takes {cfg.num_frames}")
  return resize_frames(frames, cfg.image_size)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 [F, H, W, 3] -> uint8 [F, size, size, 3], area averaging (unchanged if already that
  size)."""
  if frames.shape[1:3] == (size, size):
    return frames
  return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


@dataclasses.dataclass(frozen=True)
class ClipTransform:
  """Decoded record -> one model example (no batch axis). ``stage``: "pretrain" adds host
  masks, "finetune" adds labels and the spec §11 augmentations (those ``augmentation``
  enables), "eval" adds labels only. With ``identities`` ({identity: id}) the example carries
  ``identity`` int32."""

  cfg: ModelConfig
  stage: str
  video_mask_ratio: float = 0.0
  audio_mask_ratio: float = 0.0
  augmentation: augment.Options = augment.Options()
  identities: Optional[Mapping[str, int]] = None

  def __call__(self, clip: records.ClipRecord, rng: Optional[np.random.Generator]
               ) -> Dict[str, np.ndarray]:
    frames = video_input(clip.frames, self.cfg)
    augmented = self.stage == "finetune"
    if augmented and self.augmentation.video:
      frames = augment.augment_video(rng, frames)
    example = {"video": frames,
               "audio": audio_features(clip.audio, self.cfg, rng if augmented else None,
                                       self.augmentation)}
    if self.stage == "pretrain":
      example["ids_keep_video"], example["ids_keep_audio"] = host_pretraining_masks(
          rng, self.cfg, self.video_mask_ratio, self.audio_mask_ratio)
    else:
      example.update({key: np.float32(getattr(clip, key)) for key in LABEL_KEYS})
    if self.identities is not None:
      example["identity"] = np.int32(self.identities[clip.identity])
    return example


def balanced_weights(labels: np.ndarray) -> np.ndarray:
  """float64 [N] sampling probabilities ∝ 1 / (count of the sample's class), summing to 1
  (each class drawn equally often, as PyTorch's WeightedRandomSampler with those weights)."""
  classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
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


def _shuffled(indices: np.ndarray, seed: int, index: int, count: int) -> grain.MapDataset:
  """This process's slice of an endless seeded shuffle of ``indices``."""
  return grain.MapDataset.source(indices).shuffle(seed=seed).repeat(None)[index::count]


def training_records(data: PreparedData, indices: np.ndarray, local_batch_size: int,
                     seed: int, *, balanced: bool = False, clips_per_identity: int = 0,
                     mixture: Sequence[Tuple[PreparedData, float]] = (),
                     shard_index: Optional[int] = None, shard_count: Optional[int] = None
                     ) -> grain.MapDataset:
  """This process's endless, seeded stream of decoded training clips (before featurising).

  The records ``indices`` shuffled and repeated; ``balanced`` draws them with probability ∝
  1/count of their ``overall_label``, with replacement; ``clips_per_identity`` > 0 draws every
  batch of ``local_batch_size`` as identities × that many clips of different videos
  (:class:`IdentityGroups`). ``mixture`` ((prepared data, share), ...) mixes in every clip of
  other prepared data, each making up its share of the clips (a fixed interleaving by share;
  pretraining, e.g. out-of-domain clips without faces).
  """
  index, count = process_shard(shard_index, shard_count)
  if clips_per_identity:
    ds = grain.MapDataset.range(ENDLESS).map(identity_groups(
        data, indices, local_batch_size, clips_per_identity, seed * count + index))
  elif balanced:
    probabilities = balanced_weights(data.record_labels()[indices])
    ds = grain.MapDataset.range(len(indices)).repeat(None).random_map(
        WeightedPick(indices, np.cumsum(probabilities)), seed=seed)[index::count]
  else:
    ds = _shuffled(indices, seed, index, count)
  ds = ds.map(ReadRecord(data.source()))
  if mixture:
    extra = [_shuffled(other.split_indices(None), seed + 3 + k, index, count)
             .map(ReadRecord(other.source())) for k, (other, _) in enumerate(mixture)]
    shares = [share for _, share in mixture]
    ds = grain.MapDataset.mix([ds] + extra, [1.0 - sum(shares)] + shares)
  return ds


def training_dataset(data: PreparedData, split: Optional[str], cfg: ModelConfig, stage: str,
                     local_batch_size: int, seed: int, *, balanced: bool = False,
                     video_mask_ratio: float = 0.0, audio_mask_ratio: float = 0.0,
                     augmentation: augment.Options = augment.Options(), workers: int = 0,
                     real_only: bool = False, identities: Optional[Mapping[str, int]] = None,
                     clips_per_identity: int = 0,
                     pseudo_fake_options: Optional[pseudo_fakes.PseudoFakeOptions] = None,
                     mixture: Sequence[Tuple[PreparedData, float]] = (),
                     shard_index: Optional[int] = None,
                     shard_count: Optional[int] = None) -> grain.IterDataset:
  """Endless, seeded, per-process training batches of ``local_batch_size`` examples.

  The same (seed, shard) gives the same batches; shards are disjoint, and together cover each
  epoch's permutation. The clips of ``split`` (``real_only``: its real clips) come from
  :func:`training_records` (``balanced``, ``clips_per_identity``, ``mixture``: pretraining only,
  not with identity groups); ``augmentation`` picks the fine-tuning augmentations; ``identities`` adds each
  clip's ``identity`` id; ``pseudo_fake_options`` turns clips into temporally-local
  pseudo-fakes (``havic_jax.data.pseudo_fakes``) before featurising. ``workers`` > 0 decodes in that
  many processes.
  """
  if stage not in ("pretrain", "finetune"):
    raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
  if mixture and (stage != "pretrain" or clips_per_identity):
    raise ValueError("data.mixture mixes data into HAVIC pretraining only (not fine-tuning, not "
                     "identity-grouped batches)")
  indices = data.split_indices(split)
  if real_only:
    indices = data.real_indices(indices)
  ds = training_records(data, indices, local_batch_size, seed, balanced=balanced,
                        clips_per_identity=clips_per_identity, mixture=mixture,
                        shard_index=shard_index, shard_count=shard_count)
  if pseudo_fake_options is not None:
    donor = pseudo_fakes.RecordDonor(data.source(), indices)
    ds = ds.random_map(pseudo_fakes.PseudoFakeTransform(donor, pseudo_fake_options),
                       seed=seed + 2)
  transform = ClipTransform(cfg, stage, video_mask_ratio, audio_mask_ratio, augmentation,
                            identities)
  ds = ds.random_map(transform, seed=seed + 1)
  ds = ds.batch(local_batch_size, drop_remainder=True).to_iter_dataset()
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


def eval_dataset(data: PreparedData, split: Optional[str], cfg: ModelConfig,
                 local_batch_size: int, *, workers: int = 0, shard_index: Optional[int] = None,
                 shard_count: Optional[int] = None) -> grain.IterDataset:
  """Every record of ``split`` once, in order, as this process's batches; padded (``valid`` =
  0) to a multiple of the global batch so all processes run the same number of batches."""
  indices = data.split_indices(split)
  index, count = process_shard(shard_index, shard_count)
  global_batch = local_batch_size * count
  padded = -(-len(indices) // global_batch) * global_batch
  ds = grain.MapDataset.range(padded)[index::count]
  ds = ds.map(EvalTransform(data.source(), indices, ClipTransform(cfg, "eval")))
  ds = ds.batch(local_batch_size).to_iter_dataset()
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return ds


def example_spec(cfg: ModelConfig, stage: str, video_mask_ratio: float = 0.0,
                 audio_mask_ratio: float = 0.0) -> Dict[str, tuple]:
  """(shape without batch, dtype) of every key a pipeline yields for ``stage``."""
  spec = {"video": ((cfg.num_frames, cfg.image_size, cfg.image_size, 3), np.uint8),
          "audio": ((cfg.audio_frames, cfg.mel_bins), np.float32)}
  if stage == "pretrain":
    keep_v = kept_per_group(cfg.video_grid ** 2, video_mask_ratio) * cfg.video_time_tokens
    keep_a = kept_per_group(cfg.audio_segment_tokens, audio_mask_ratio) * cfg.num_segments
    spec.update(ids_keep_video=((keep_v,), np.int32), ids_keep_audio=((keep_a,), np.int32))
  else:
    spec.update({key: ((), np.float32) for key in LABEL_KEYS})
  if stage == "eval":
    spec.update(valid=((), np.float32), record_index=((), np.int32))
  return spec

