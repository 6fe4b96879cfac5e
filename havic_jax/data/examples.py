"""Decoded clip records -> model examples: audio features (fbank, spec §1), resized frames,
pretraining masks or fine-tuning augmentations (spec §11) and labels.

An example is a dict of NumPy arrays without a batch axis: ``video`` uint8 [F, S, S, 3],
``audio`` float32 [T, M], and per stage ``ids_keep_video``/``ids_keep_audio`` int32 or
``audio_label``/``visual_label``/``overall_label`` float32 (1 = fake), ``identity`` int32.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional

import cv2
import numpy as np

from havic_jax.data import augment, records
from havic_jax.models.masking import pretraining_masks
from havic_jax.media.clips import INT16_SCALE
from havic_jax.media.fbank import audio_features as audio_features_of_wave
from havic_jax.media.fbank import log_mel, normalise
from havic_jax.models.config import ModelConfig


def audio_features(wave: np.ndarray,
                   model_config: ModelConfig,
                   rng: Optional[np.random.Generator] = None,
                   options: Optional[augment.Options] = None) -> np.ndarray:
  """int16 [S] 16 kHz clip audio -> float32 [audio_frames, mel_bins] model input (spec §1).

  With ``rng`` and ``options.audio`` (fine-tuning), the spec §11 audio augmentation:
  frequency/time masks on the fbank before normalisation, noise after it."""
  wave = wave.astype(np.float32) / INT16_SCALE
  if rng is None or options is None or not options.audio:
    return audio_features_of_wave(wave, model_config.audio_frames, model_config.mel_bins)
  fbank = augment.mask_fbank(rng, log_mel(wave, model_config.audio_frames, model_config.mel_bins),
                             options.freq_mask, options.time_mask)
  return augment.add_noise(rng, normalise(fbank).astype(np.float32))


def video_input(frames: np.ndarray, model_config: ModelConfig) -> np.ndarray:
  """uint8 [F, H, W, 3] crops -> uint8 [num_frames, image_size, image_size, 3] (resized with
  area averaging when the model is smaller than the stored crops)."""
  if frames.shape[0] != model_config.num_frames:
    raise records.DataError(f"records hold {frames.shape[0]} frames, the model takes "
                            f"{model_config.num_frames}")
  return resize_frames(frames, model_config.image_size)


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
  enables; None: none), "eval" adds labels only. With ``identities`` ({identity: id}) the
  example carries ``identity`` int32."""

  model_config: ModelConfig
  stage: str
  video_mask_ratio: float = 0.0
  audio_mask_ratio: float = 0.0
  augmentation: Optional[augment.Options] = None
  identities: Optional[Mapping[str, int]] = None

  def __call__(self, clip: records.ClipRecord, rng: Optional[np.random.Generator]
               ) -> Dict[str, np.ndarray]:
    frames = video_input(clip.frames, self.model_config)
    augmented = self.stage == "finetune"
    if augmented and self.augmentation is not None and self.augmentation.video:
      frames = augment.augment_video(rng, frames)
    example = {"video": frames,
               "audio": audio_features(clip.audio, self.model_config, rng if augmented else None,
                                       self.augmentation)}
    if self.stage == "pretrain":
      example["ids_keep_video"], example["ids_keep_audio"] = pretraining_masks(
          rng, self.model_config, self.video_mask_ratio, self.audio_mask_ratio)
    else:
      example.update({key: np.float32(getattr(clip, key)) for key in records.LABEL_KEYS})
    if self.identities is not None:
      example["identity"] = np.int32(self.identities[clip.identity])
    return example
