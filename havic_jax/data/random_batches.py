"""Random batches in the input pipeline's format, for smoke runs, tests and benchmarks.

Each process yields its own slice of the global batch as NumPy arrays, keyed and typed as the
pipeline's (``input_pipeline.example_spec``): video uint8 [b, F, H, W, 3]; audio float32
[b, time, mel] (standard normal, like a normalised fbank); for pretraining (``masks``),
``ids_keep_video`` / ``ids_keep_audio`` int32 drawn per sample by the pipeline's own sampler
(``masking.pretraining_mask_batch``); for fine-tuning ``audio_label``, ``visual_label``,
``overall_label`` [b] float32, drawn from the four real/fake combinations of spec §9; with
``identities``, ``identity`` [b] int32 ids below b (the detectors that learn identities).
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np

from havic_jax.models.config import ModelConfig
from havic_jax.models.masking import pretraining_mask_batch
from havic_jax.sharding import local_batch_size

# (audio, visual, overall) labels: RVRA, RVFA, FVRA, FVFA.
LABEL_COMBINATIONS = np.array([(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)], np.float32)


def make_batch(rng: np.random.Generator, model_config: ModelConfig, stage: str, batch_size: int,
               masks: Optional[Tuple[float, float]] = None, identities: bool = False
               ) -> Dict[str, np.ndarray]:
  """One random batch of ``batch_size``. ``masks``: (video, audio) mask ratios of the masks of
  pretraining (needed there)."""
  batch = {
      "video": rng.integers(0, 256, (batch_size, model_config.num_frames, model_config.image_size,
                                     model_config.image_size, 3), dtype=np.uint8),
      "audio": rng.standard_normal((batch_size, model_config.audio_frames, model_config.mel_bins),
                                   dtype=np.float32),
  }
  if stage == "pretrain":
    if masks is None:
      raise ValueError("pretraining batches need masks=(video, audio mask ratio)")
    batch["ids_keep_video"], batch["ids_keep_audio"] = pretraining_mask_batch(
        rng, batch_size, model_config, *masks)
  if stage == "finetune":
    labels = LABEL_COMBINATIONS[rng.integers(0, len(LABEL_COMBINATIONS), batch_size)]
    batch.update(audio_label=labels[:, 0], visual_label=labels[:, 1],
                 overall_label=labels[:, 2])
  if identities:
    batch["identity"] = rng.integers(0, batch_size, batch_size).astype(np.int32)
  return batch


def synthetic_batches(model_config: ModelConfig, stage: str, global_batch_size: int, seed: int,
                      fixed: bool = False, start_step: int = 0,
                      masks: Optional[Tuple[float, float]] = None, identities: bool = False
                      ) -> Iterator[Dict[str, np.ndarray]]:
  """Endless host-local batches (:func:`make_batch`) from ``start_step`` on; batch s depends
  only on (seed, process, s), so a resumed run continues with the same batches.
  ``fixed=True`` repeats batch 0 (for overfitting checks)."""
  size = local_batch_size(global_batch_size)
  step = start_step
  while True:
    rng = np.random.default_rng([seed, jax.process_index(), 0 if fixed else step])
    yield make_batch(rng, model_config, stage, size, masks, identities)
    step += 1
