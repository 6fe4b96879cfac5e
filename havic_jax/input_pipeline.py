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
from typing import Any, Dict, Mapping, Optional

import cv2
import grain
import numpy as np

from havic_jax import augment, records
from havic_jax.masking import host_pretraining_masks, kept_per_group
from havic_jax.media.clips import INT16_SCALE
from havic_jax.media.fbank import audio_features as audio_features_of_wave
from havic_jax.media.fbank import log_mel, normalise
from havic_jax.models.config import ModelConfig

MANIFEST = "manifest.json"
LABEL_KEYS = ("audio_label", "visual_label", "overall_label")


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


def open_prepared(directory: str) -> PreparedData:
  """Reads ``directory/manifest.json``; errors say how to make one."""
  path = pathlib.Path(directory)
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
  """Record bytes -> one model example (no batch axis). ``stage``: "pretrain" adds host masks,
  "finetune" adds labels and the spec §11 augmentations (those ``augmentation`` enables), "eval"
  adds labels only."""

  cfg: ModelConfig
  stage: str
  video_mask_ratio: float = 0.0
  audio_mask_ratio: float = 0.0
  augmentation: augment.Options = augment.Options()

  def __call__(self, data: bytes, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return self.example(records.decode(data), rng)

  def example(self, clip: records.ClipRecord, rng: Optional[np.random.Generator]
              ) -> Dict[str, np.ndarray]:
    """The example of a decoded record."""
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
class ReadRecord:
  """Record index -> serialised record."""

  source: Any

  def __call__(self, index: int) -> bytes:
    return self.source[int(index)]


def process_shard(shard_index: Optional[int] = None, shard_count: Optional[int] = None
                  ) -> tuple[int, int]:
  """(index, count) of this process's input shard: JAX's process index and count unless
  given (tests simulate several processes this way)."""
  if shard_index is None or shard_count is None:
    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    return options.shard_index, options.shard_count
  return shard_index, shard_count


def training_dataset(data: PreparedData, split: Optional[str], cfg: ModelConfig, stage: str,
                     local_batch_size: int, seed: int, *, balanced: bool = False,
                     video_mask_ratio: float = 0.0, audio_mask_ratio: float = 0.0,
                     augmentation: augment.Options = augment.Options(), workers: int = 0,
                     shard_index: Optional[int] = None,
                     shard_count: Optional[int] = None) -> grain.IterDataset:
  """Endless, seeded, per-process training batches of ``local_batch_size`` examples.

  The same (seed, shard) gives the same batches; shards are disjoint, and together cover each
  epoch's permutation. ``balanced`` (fine-tuning) draws records with probability ∝ 1/count of
  their ``overall_label``, with replacement; ``augmentation`` picks its augmentations.
  ``workers`` > 0 decodes in that many processes.
  """
  if stage not in ("pretrain", "finetune"):
    raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
  indices = data.split_indices(split)
  if balanced:
    probabilities = balanced_weights(data.record_labels()[indices])
    ds = grain.MapDataset.range(len(indices)).repeat(None).random_map(
        WeightedPick(indices, np.cumsum(probabilities)), seed=seed)
  else:
    ds = grain.MapDataset.source(indices).shuffle(seed=seed).repeat(None)
  index, count = process_shard(shard_index, shard_count)
  ds = ds[index::count]
  transform = ClipTransform(cfg, stage, video_mask_ratio, audio_mask_ratio, augmentation)
  ds = ds.map(ReadRecord(data.source())).random_map(transform, seed=seed + 1)
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
    example = self.transform(self.source[record_index], None)
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

