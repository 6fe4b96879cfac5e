"""Input throughput: preparation clips/s, Grain loader samples/s per worker process, the eval
binary's window inputs per second, and its window shards cut, read back and scored.

  python -m data_pipelines.bench [--prepared=DIR] [--videos=16] [--workers=0,1,2] [--batches=20]
  python -m data_pipelines.bench --runners=local,beam --detect_every=1,4 --per_stage --batches=0
  python -m data_pipelines.bench --eval_windows [--eval_data=DIR] --detect_every=1,2,4 \
      --runners= --batches=0
  python -m data_pipelines.bench --eval_shards --video_seconds=10 --videos_per_shard=1 \
      --score_batch_size=9 --runners= --batches=0

Without ``--prepared`` it generates the synthetic corpus (``--videos`` videos of
``--video_seconds``; 6.4 s: two clips each) in a temporary directory and times its preparation
first, once per runner (``local``: ``--prepare_workers`` processes; ``beam``: the DirectRunner
with as many worker processes) and ``--detect_every`` value. ``--per_stage`` adds the per-clip
time of each preparation stage (decoding, face detection, crop resizing, JPEG encoding, and the
fbank the loader computes) and the agreement of the ``--detect_every`` crops (and of centre
crops) with detection on every frame: IoU of the crop boxes, mean absolute pixel difference of
the crops.
The loader is timed on pretraining or fine-tuning batches at the base model's input size
(16×224×224 video, 1024×128 fbank), after one warm-up batch (``--batches=0``: not timed).
``--eval_windows`` times the eval binary's window inputs of raw videos in one process (decoding,
MTCNN on the sampled frames, crops at the base model's input size, fbank) per ``--detect_every``
value, on ``--eval_data`` (a FakeAVCeleb directory or a CSV of videos) or the synthetic corpus.
``--eval_shards`` times the eval binary at scale on the same videos: cutting them into window
shards at the base model's input size (``evaluation.window_shards.write_windows``) once per
``--shard_runs`` entry (the local runner's worker processes, or the Beam DirectRunner's), then
reading the first run's shards back (``read_shard``) and scoring them
(``evaluation.shard_scoring.score_shards``) with an untrained fine-tuning model of each
``--shard_models`` size at that input size, shard after shard for ``--score_seconds`` after one
compiling batch. Per core: windows per CPU second of this process and of its worker processes
(``resource.getrusage``), which other jobs on the machine do not lower.
Prints tables and, with ``--json``, writes the figures.
"""
# (The docstring is the --help text.) The timings live beside this module: bench_preparation
# (preparation and its stages), bench_loader (the training loader), bench_eval (the eval's
# window inputs and window shards), bench_table (the printed table); here: the flags and run.

from __future__ import annotations

import json
import os
import pathlib
import platform
import tempfile
from typing import Any, Dict, List, Sequence

from absl import app, flags

from data_pipelines.bench_eval import (SCORING_MODELS, SHARD_RUNS, time_eval_shards,
                                       time_eval_windows)
from data_pipelines.bench_loader import time_loader
from data_pipelines.bench_preparation import crop_agreement, stage_times, time_preparation
from data_pipelines.bench_table import format_table
from havic_jax import cli
from havic_jax.data import records

FLAGS = flags.FLAGS


def run(prepared: str, videos: int, prepare_workers: int, workers: Sequence[int],
        stages: Sequence[str], batch_size: int, batches: int, runners: Sequence[str] = ("local",),
        detect_every: Sequence[int] = (1,), per_stage: bool = False,
        videos_per_shard: int = 4, eval_windows: bool = False, eval_data: str = "",
        eval_shards: bool = False, shard_runs: Sequence[str] = SHARD_RUNS,
        shard_models: Sequence[str] = SCORING_MODELS, score_batch_size: int = 8,
        score_seconds: float = 60.0, video_seconds: float = 6.4) -> List[Dict[str, Any]]:
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    corpus = pathlib.Path(scratch) / "videos"
    if ((not prepared and (per_stage or runners))
        or ((eval_windows or eval_shards) and not eval_data)):
      from havic_jax.data import synthetic
      synthetic.generate_corpus(corpus, videos, seed=0, duration=video_seconds)
    if eval_windows:
      results += [time_eval_windows(eval_data or str(corpus), every) for every in detect_every]
    if eval_shards:
      results += time_eval_shards(eval_data or str(corpus), pathlib.Path(scratch), shard_runs,
                                  shard_models, videos_per_shard, score_batch_size,
                                  score_seconds)
    if not prepared:
      if per_stage:
        files = sorted(corpus.rglob("*.mp4"))
        results.append(stage_times(files))
        results += crop_agreement(files, [str(k) for k in detect_every if k > 1] + ["centre"])
      for runner in runners:
        for every in detect_every:
          prepared = str(pathlib.Path(scratch) / f"prepared_{runner}_{every}")
          results.append(time_preparation(corpus, pathlib.Path(prepared), prepare_workers,
                                          runner, every, videos_per_shard))
    if batches:
      data = records.open_prepared(prepared)
      for stage in stages:
        for count in workers:
          results.append(time_loader(data, stage, count, batch_size, batches))
  return results


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  results = run(FLAGS.prepared, FLAGS.videos, FLAGS.prepare_workers,
                [int(w) for w in FLAGS.workers], FLAGS.stages, FLAGS.batch_size, FLAGS.batches,
                FLAGS.runners, [int(k) for k in FLAGS.detect_every], FLAGS.per_stage,
                FLAGS.videos_per_shard, FLAGS.eval_windows, FLAGS.eval_data,
                FLAGS.eval_shards, FLAGS.shard_runs, FLAGS.shard_models,
                FLAGS.score_batch_size, FLAGS.score_seconds, FLAGS.video_seconds)
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")
  print(format_table(results))
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1))


def define_flags() -> None:
  flags.DEFINE_string("prepared", "", "Prepared directory to read (default: make the synthetic "
                      "corpus in a temporary directory and time its preparation).")
  flags.DEFINE_integer("videos", 16, "Synthetic videos to generate without --prepared.")
  flags.DEFINE_float("video_seconds", 6.4, "Length of each synthetic video, s (10: the 18 "
                     "windows of the eval's default --max_seconds).")
  flags.DEFINE_integer("prepare_workers", max(1, os.cpu_count() or 1),
                       "Processes for the timed preparation (local workers, or the Beam "
                       "DirectRunner's worker processes).")
  flags.DEFINE_list("runners", ["local"], "Preparation runners to time: local, beam.")
  flags.DEFINE_integer("videos_per_shard", 4, "Shard size of the timed preparation (the local "
                       "runner gives each worker whole shards: keep a shard per worker) and of "
                       "--eval_shards' window shards.", lower_bound=1)
  flags.DEFINE_list("detect_every", ["1"], "prepare (and eval --eval_windows) --detect_every "
                    "values to time.")
  flags.DEFINE_bool("per_stage", False, "Also time each preparation stage per clip and "
                    "measure the crop agreement of --detect_every > 1 and of centre crops.")
  flags.DEFINE_bool("eval_windows", False, "Also time the eval binary's window inputs (decode, "
                    "faces, crops, fbank; one process) per --detect_every value.")
  flags.DEFINE_string("eval_data", "", "Raw videos for --eval_windows and --eval_shards: a "
                      "FakeAVCeleb directory or a CSV (default: the synthetic corpus of --videos "
                      "videos).")
  flags.DEFINE_bool("eval_shards", False, "Also time the eval binary's window shards: cut per "
                    "--shard_runs entry (--videos_per_shard videos a shard), read back, and "
                    "scored per --shard_models size.")
  flags.DEFINE_list("shard_runs", list(SHARD_RUNS), "Window-shard runs to time: local:N (N "
                    "worker processes, 0: this one), beam:N (the DirectRunner, N worker "
                    "processes; 1: in this process).")
  flags.DEFINE_list("shard_models", list(SCORING_MODELS), "Sizes of the untrained fine-tuning "
                    "models (at the base input size) that score the first run's shards.")
  flags.DEFINE_integer("score_batch_size", 8, "Windows per scoring batch (rounded up to a "
                       "multiple of the devices).", lower_bound=1)
  flags.DEFINE_float("score_seconds", 60.0, "Each model scores shard after shard until this "
                     "many seconds have passed (at least one shard).")
  flags.DEFINE_list("workers", ["0", "1", "2"], "Loader worker-process counts to time "
                    "(0: decoding in the main process with Grain's reader threads).")
  flags.DEFINE_list("stages", ["pretrain", "finetune"], "Batch kinds to time.")
  flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
  flags.DEFINE_integer("batches", 20, "Timed batches (after one warm-up batch; 0: the loader "
                       "is not timed).")
  flags.DEFINE_string("json", "", "Write the figures to this JSON file as well.")



if __name__ == "__main__":
  define_flags()
  cli.run(main)
