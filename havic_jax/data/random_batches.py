"""Random batches in the model's input format, for smoke runs, tests and benchmarks.

Each process yields its own slice of the global batch as NumPy arrays:
video [b, F, H, W, 3] float32 in [0, 1); audio [b, time, mel] float32 (standard normal, like a
normalised fbank); for fine-tuning also ``audio_label``, ``visual_label``, ``overall_label``
[b] float32, drawn from the four real/fake combinations of spec §9; ``identity`` [b] int32 ids
below b (for the detectors that learn identities).
"""

from __future__ import annotations

from typing import Dict, Iterator

import jax
import numpy as np

from havic_jax.models.config import ModelConfig
from havic_jax.sharding import local_batch_size

# (audio, visual, overall) labels: RVRA, RVFA, FVRA, FVFA.
LABEL_COMBINATIONS = np.array([(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)], np.float32)


def make_batch(rng: np.random.Generator, cfg: ModelConfig, stage: str, batch_size: int
               ) -> Dict[str, np.ndarray]:
  batch = {
      "video": rng.random((batch_size, cfg.num_frames, cfg.image_size, cfg.image_size, 3),
                          dtype=np.float32),
      "audio": rng.standard_normal((batch_size, cfg.audio_frames, cfg.mel_bins),
                                   dtype=np.float32),
      "identity": rng.integers(0, batch_size, batch_size).astype(np.int32),
  }
  if stage == "finetune":
    labels = LABEL_COMBINATIONS[rng.integers(0, len(LABEL_COMBINATIONS), batch_size)]
    batch.update(audio_label=labels[:, 0], visual_label=labels[:, 1],
                 overall_label=labels[:, 2])
  return batch


def synthetic_batches(cfg: ModelConfig, stage: str, global_batch_size: int, seed: int,
                      fixed: bool = False, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
  """Endless host-local batches from ``start_step`` on; batch s depends only on (seed, process,
  s), so a resumed run continues with the same batches. ``fixed=True`` repeats batch 0 (for
  overfitting checks)."""
  size = local_batch_size(global_batch_size)
  step = start_step
  while True:
    rng = np.random.default_rng([seed, jax.process_index(), 0 if fixed else step])
    yield make_batch(rng, cfg, stage, size)
    step += 1
