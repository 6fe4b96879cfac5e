"""The input bench's loader timings (``data_pipelines.bench``): samples/s of the Grain
training pipeline's pretraining or fine-tuning batches at the base model's input size."""

from __future__ import annotations

import itertools
import time
from typing import Any, Dict

from configs import common
from havic_jax.data import input_pipeline, records
from havic_jax.models.config import ModelConfig


def time_loader(data: records.PreparedData, stage: str, workers: int, batch_size: int,
                batches: int) -> Dict[str, Any]:
  """samples/s of ``batches`` training batches after one warm-up batch."""
  pretrain = common.base_config("pretrain").pretrain
  ratios = ({"video_mask_ratio": pretrain.video_mask_ratio,
             "audio_mask_ratio": pretrain.audio_mask_ratio} if stage == "pretrain" else {})
  dataset = input_pipeline.training_dataset(data, None, ModelConfig(), stage, batch_size, seed=0,
                                            balanced=stage == "finetune", workers=workers,
                                            **ratios)
  iterator = iter(dataset)
  next(iterator)
  started = time.perf_counter()
  for _ in itertools.islice(iterator, batches):
    pass
  seconds = time.perf_counter() - started
  samples_per_second = batches * batch_size / seconds
  return {"stage": stage, "workers": workers, "batch_size": batch_size, "batches": batches,
          "samples_per_second": samples_per_second,
          "samples_per_second_per_worker": samples_per_second / max(workers, 1)}
