"""Input throughput: preparation clips/s and Grain loader samples/s per worker process.

  python -m data_pipelines.bench [--prepared=DIR] [--videos=16] [--workers=0,1,2] [--batches=20]

Without ``--prepared`` it generates the synthetic corpus (``--videos`` videos of 6.4 s, two
clips each) in a temporary directory and times its preparation first. The loader is timed on
pretraining or fine-tuning batches at the base model's input size (16×224×224 video, 1024×128
fbank), after one warm-up batch. Prints a table and, with ``--json``, writes the figures.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import platform
import tempfile
import time
from typing import Any, Dict, List, Sequence

from absl import app, flags

from configs import common
from havic_jax import cli, input_pipeline
from havic_jax.models.config import ModelConfig

FLAGS = flags.FLAGS


def time_preparation(directory: pathlib.Path, videos: int, workers: int) -> Dict[str, Any]:
  """Generates and prepares the synthetic corpus; returns clips/s of the preparation."""
  from data_pipelines import prepare, synthetic
  synthetic.generate_corpus(directory / "videos", videos, seed=0, duration=6.4)
  started = time.perf_counter()
  manifest = prepare.prepare("fakeavceleb", str(directory / "videos"),
                             str(directory / "prepared"), workers=workers)
  seconds = time.perf_counter() - started
  clips = manifest["counts"]["clips"]
  return {"stage": "prepare", "workers": workers, "clips": clips, "seconds": seconds,
          "clips_per_second": clips / seconds,
          "clips_per_second_per_worker": clips / seconds / workers}


def time_loader(data: input_pipeline.PreparedData, stage: str, workers: int, batch_size: int,
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


def run(prepared: str, videos: int, prepare_workers: int, workers: Sequence[int],
        stages: Sequence[str], batch_size: int, batches: int) -> List[Dict[str, Any]]:
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    if not prepared:
      results.append(time_preparation(pathlib.Path(scratch), videos, prepare_workers))
      prepared = str(pathlib.Path(scratch) / "prepared")
    data = input_pipeline.open_prepared(prepared)
    for stage in stages:
      for count in workers:
        results.append(time_loader(data, stage, count, batch_size, batches))
  return results


def format_table(results: Sequence[Dict[str, Any]]) -> str:
  lines = [f"{'stage':<9} {'workers':>7} {'per second':>12} {'per worker':>12}"]
  for r in results:
    unit = "clips" if r["stage"] == "prepare" else "samples"
    total, per_worker = r[f"{unit}_per_second"], r[f"{unit}_per_second_per_worker"]
    lines.append(f"{r['stage']:<9} {r['workers']:>7} {total:>8.1f} {unit[:4]:<3} "
                 f"{per_worker:>8.1f}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  results = run(FLAGS.prepared, FLAGS.videos, FLAGS.prepare_workers,
                [int(w) for w in FLAGS.workers], FLAGS.stages, FLAGS.batch_size, FLAGS.batches)
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")
  print(format_table(results))
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1))


def define_flags() -> None:
  flags.DEFINE_string("prepared", "", "Prepared directory to read (default: make the synthetic "
                      "corpus in a temporary directory and time its preparation).")
  flags.DEFINE_integer("videos", 16, "Synthetic videos to generate without --prepared.")
  flags.DEFINE_integer("prepare_workers", max(1, os.cpu_count() or 1),
                       "Processes for the timed preparation.")
  flags.DEFINE_list("workers", ["0", "1", "2"], "Loader worker-process counts to time "
                    "(0: decoding in the main process with Grain's reader threads).")
  flags.DEFINE_list("stages", ["pretrain", "finetune"], "Batch kinds to time.")
  flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
  flags.DEFINE_integer("batches", 20, "Timed batches (after one warm-up batch).")
  flags.DEFINE_string("json", "", "Write the figures to this JSON file as well.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
