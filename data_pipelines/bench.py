"""Input throughput: preparation clips/s, Grain loader samples/s per worker process, and the eval
binary's window inputs per second.

  python -m data_pipelines.bench [--prepared=DIR] [--videos=16] [--workers=0,1,2] [--batches=20]
  python -m data_pipelines.bench --runners=local,beam --detect_every=1,4 --per_stage --batches=0
  python -m data_pipelines.bench --eval_windows [--eval_data=DIR] --detect_every=1,2,4 \
      --runners= --batches=0

Without ``--prepared`` it generates the synthetic corpus (``--videos`` videos of 6.4 s, two
clips each) in a temporary directory and times its preparation first, once per runner
(``local``: ``--prepare_workers`` processes; ``beam``: the DirectRunner with as many worker
processes) and ``--detect_every`` value. ``--per_stage`` adds the per-clip time of each
preparation stage (decoding, face detection, crop resizing, JPEG encoding, and the fbank the
loader computes) and the agreement of the ``--detect_every`` crops (and of centre crops) with
detection on every frame: IoU of the crop boxes, mean absolute pixel difference of the crops.
The loader is timed on pretraining or fine-tuning batches at the base model's input size
(16×224×224 video, 1024×128 fbank), after one warm-up batch (``--batches=0``: not timed).
``--eval_windows`` times the eval binary's window inputs of raw videos in one process (decoding,
MTCNN on the sampled frames, crops at the base model's input size, fbank) per ``--detect_every``
value, on ``--eval_data`` (a FakeAVCeleb directory or a CSV of videos) or the synthetic corpus.
Prints tables and, with ``--json``, writes the figures.
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

import numpy as np
from absl import app, flags

from configs import common
from havic_jax import cli
from havic_jax.data import input_pipeline, records
from havic_jax.media.windows import MAX_SECONDS
from havic_jax.models.config import ModelConfig

FLAGS = flags.FLAGS


def time_preparation(videos: pathlib.Path, output: pathlib.Path, workers: int,
                     runner: str = "local", detect_every: int = 1,
                     videos_per_shard: int = 4) -> Dict[str, Any]:
  """Prepares the corpus in ``videos`` into ``output`` with ``workers`` processes of
  ``runner`` ("beam": the DirectRunner in multi-processing mode); returns clips/s. The local
  runner hands each process whole shards, so ``videos_per_shard`` must leave a shard for
  every worker; Beam spreads single videos."""
  from data_pipelines.prepare import shard_runner
  from havic_jax.data import prepare
  beam_options = (f"--runner=DirectRunner --direct_num_workers={workers} "
                  f"--direct_running_mode=multi_processing")
  started = time.perf_counter()
  manifest = prepare.prepare("fakeavceleb", str(videos), str(output), workers=workers,
                             videos_per_shard=videos_per_shard,
                             options=prepare.PrepareOptions(detect_every=detect_every),
                             run_shards=shard_runner(runner, beam_options))
  seconds = time.perf_counter() - started
  clips = manifest["counts"]["clips"]
  return {"stage": "prepare", "runner": runner, "detect_every": detect_every,
          "videos_per_shard": videos_per_shard, "workers": workers, "clips": clips,
          "seconds": seconds, "clips_per_second": clips / seconds,
          "clips_per_second_per_worker": clips / seconds / workers}


def _recorded_clips(video: pathlib.Path, detect) -> List[tuple]:
  """(frames uint8 [16, H, W, 3], detected boxes) of each clip of ``video`` as the
  preparation cuts it (``extract_clips``), recorded from the detector's calls."""
  from havic_jax.media.clips import extract_clips
  from havic_jax.media.decode import FRAMES_PER_CLIP, read_media
  calls: List[tuple] = []

  def recording(frame):
    calls.append((frame, detect(frame)))
    return calls[-1][1]

  extract_clips(read_media(video), recording)
  return [(np.stack([f for f, _ in calls[i:i + FRAMES_PER_CLIP]]),
           [b for _, b in calls[i:i + FRAMES_PER_CLIP]])
          for i in range(0, len(calls), FRAMES_PER_CLIP)]


def stage_times(videos: Sequence[pathlib.Path]) -> Dict[str, Any]:
  """Milliseconds per clip of each preparation stage on ``videos``, one process: decoding
  (``read_media``, every frame), face detection (MTCNN on the clip's 16 frames), the rest of
  ``extract_clips`` (frame selection, crop and resize to 224²), JPEG encoding of the record,
  and the fbank the loader computes from the clip's audio."""
  from havic_jax.media import fbank
  from havic_jax.media.clips import extract_clips
  from havic_jax.media.decode import read_media
  from havic_jax.media.faces import mtcnn_detector, process_detector
  mtcnn = process_detector(mtcnn_detector)
  totals = dict.fromkeys(("decode", "detect", "crop_resize", "jpeg", "fbank"), 0.0)
  clips = 0

  def detect(frame):
    started = time.perf_counter()
    box = mtcnn(frame)
    totals["detect"] += time.perf_counter() - started
    return box

  for video in videos:
    started = time.perf_counter()
    media = read_media(video)
    totals["decode"] += time.perf_counter() - started
    detect_before = totals["detect"]
    started = time.perf_counter()
    extracted, _ = extract_clips(media, detect)
    totals["crop_resize"] += (time.perf_counter() - started
                              - (totals["detect"] - detect_before))
    started = time.perf_counter()
    for clip in extracted:
      records.encode(records.ClipRecord(clip.frames, clip.audio, 0, 0, 0, "real", "",
                                        video.name, clip.start), "jpeg")
    totals["jpeg"] += time.perf_counter() - started
    started = time.perf_counter()
    for clip in extracted:
      fbank.audio_features(clip.audio.astype(np.float32) / 32767.0)
    totals["fbank"] += time.perf_counter() - started
    clips += len(extracted)
  per_clip = {name: 1000 * seconds / clips for name, seconds in totals.items()}
  return {"stage": "stages", "clips": clips, "ms_per_clip": per_clip,
          "ms_per_clip_total": sum(v for k, v in per_clip.items() if k != "fbank")}


def _replay(boxes: Sequence[Any]):
  """A detector that returns ``boxes`` one call after another (the frame is ignored)."""
  remaining = iter(boxes)
  return lambda frame: next(remaining)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """Intersection over union of two (x0, y0, x1, y1) boxes."""
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = width * height
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def crop_agreement(videos: Sequence[pathlib.Path], variants: Sequence[str]
                   ) -> List[Dict[str, Any]]:
  """How far the crops of each variant (``"2"``, ``"4"``: ``detect_every``; ``"centre"``:
  the frame's centre square) are from those of detection on every frame, over the clips of
  ``videos`` that detection on every frame keeps: IoU of the crop boxes (mean, 5th percentile,
  minimum), mean absolute pixel difference of the 224² crops, and clips kept differently."""
  from havic_jax.media.faces import (NoFaceError, centre_detector, crop_faces,
                                     interpolated_boxes, keyframes, mtcnn_detector,
                                     nearest_detected, process_detector, scaled_box)
  mtcnn = process_detector(mtcnn_detector)
  recorded = [clip for video in videos for clip in _recorded_clips(video, mtcnn)]
  centre = centre_detector()
  results = []
  for variant in variants:
    ious, diffs, changed, compared = [], [], 0, 0
    for frames, boxes in recorded:
      height, width = frames.shape[1:3]
      try:
        reference, _ = crop_faces(frames, _replay(boxes))
      except NoFaceError:
        continue  # a clip the preparation drops
      compared += 1
      if variant == "centre":
        other = [centre(frame) for frame in frames]
        detect, every = centre, 1
      else:
        every = int(variant)
        chosen = keyframes(len(frames), every)
        other = interpolated_boxes(len(frames), chosen.tolist(), [boxes[i] for i in chosen])
        detect = _replay([boxes[i] for i in chosen])
      try:
        crops, _ = crop_faces(frames, detect, detect_every=every)
      except NoFaceError:
        changed += 1
        continue
      ious += [box_iou(scaled_box(a, width, height), scaled_box(b, width, height))
               for a, b in zip(nearest_detected(boxes), nearest_detected(other))]
      diffs.append(np.abs(crops.astype(np.int16) - reference).mean())
    results.append({"stage": "agreement", "variant": variant, "clips": compared,
                    "clips_changed": changed, "iou_mean": float(np.mean(ious)),
                    "iou_p5": float(np.percentile(ious, 5)), "iou_min": float(np.min(ious)),
                    "pixel_mad": float(np.mean(diffs))})
  return results


def time_eval_windows(data_path: str, detect_every: int) -> Dict[str, Any]:
  """Windows/s of the eval binary's window inputs (``inputs.window_inputs``, workers=0) of the
  videos of ``data_path`` with faces detected on every ``detect_every``-th sampled frame, after
  one warm-up video (MTCNN loading). Per core: windows per CPU second of this process (all its
  threads), which other jobs on the machine do not lower."""
  from havic_jax.evaluation import inputs, videos
  data = videos.load_data(data_path)
  cfg = ModelConfig()
  list(inputs.window_inputs(data.videos[:1], data, cfg, MAX_SECONDS, False, None, 0,
                            detect_every=detect_every))
  wall, cpu = time.perf_counter(), time.process_time()
  made = list(inputs.window_inputs(data.videos, data, cfg, MAX_SECONDS, False, None, 0,
                                   detect_every=detect_every))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  windows = sum(0 if w.video is None else len(w.video) for w in made)
  statuses = {s: sum(w.status == s for w in made) for s in sorted({w.status for w in made})}
  return {"stage": "eval_windows", "detect_every": detect_every, "videos": len(made),
          "windows": windows, "seconds": wall, "cpu_seconds": cpu,
          "windows_per_second": windows / wall, "windows_per_cpu_second": windows / cpu,
          "statuses": statuses}


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


def run(prepared: str, videos: int, prepare_workers: int, workers: Sequence[int],
        stages: Sequence[str], batch_size: int, batches: int, runners: Sequence[str] = ("local",),
        detect_every: Sequence[int] = (1,), per_stage: bool = False,
        videos_per_shard: int = 4, eval_windows: bool = False, eval_data: str = ""
        ) -> List[Dict[str, Any]]:
  results = []
  with tempfile.TemporaryDirectory() as scratch:
    corpus = pathlib.Path(scratch) / "videos"
    if (not prepared and (per_stage or runners)) or (eval_windows and not eval_data):
      from havic_jax.data import synthetic
      synthetic.generate_corpus(corpus, videos, seed=0, duration=6.4)
    if eval_windows:
      results += [time_eval_windows(eval_data or str(corpus), every) for every in detect_every]
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


def format_table(results: Sequence[Dict[str, Any]]) -> str:
  lines = [f"{'stage':<9} {'workers':>7} {'per second':>12} {'per worker':>12}"]
  for r in results:
    if r["stage"] == "stages":
      lines.append("ms per clip: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                               r["ms_per_clip"].items())
                   + f" (preparation total {r['ms_per_clip_total']:.1f}; {r['clips']} clips)")
      continue
    if r["stage"] == "agreement":
      lines.append(f"crops {r['variant']:>6} vs every frame: IoU mean {r['iou_mean']:.4f}, "
                   f"p5 {r['iou_p5']:.4f}, min {r['iou_min']:.4f}; pixel MAD "
                   f"{r['pixel_mad']:.2f}; {r['clips_changed']} of {r['clips']} clips changed")
      continue
    if r["stage"] == "eval_windows":
      lines.append(f"eval windows (detect_every={r['detect_every']}): {r['windows']} windows of "
                   f"{r['videos']} videos in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second']:.2f} windows/s, "
                   f"{r['windows_per_cpu_second']:.2f} per CPU second; " +
                   ", ".join(f"{n} {s}" for s, n in r["statuses"].items()))
      continue
    unit = "clips" if r["stage"] == "prepare" else "samples"
    total, per_worker = r[f"{unit}_per_second"], r[f"{unit}_per_second_per_worker"]
    name = (f"{r['stage']} ({r['runner']}, detect_every={r['detect_every']})"
            if r["stage"] == "prepare" else r["stage"])
    lines.append(f"{name:<9} {r['workers']:>7} {total:>8.2f} {unit[:4]:<3} "
                 f"{per_worker:>8.2f}")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  results = run(FLAGS.prepared, FLAGS.videos, FLAGS.prepare_workers,
                [int(w) for w in FLAGS.workers], FLAGS.stages, FLAGS.batch_size, FLAGS.batches,
                FLAGS.runners, [int(k) for k in FLAGS.detect_every], FLAGS.per_stage,
                FLAGS.videos_per_shard, FLAGS.eval_windows, FLAGS.eval_data)
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")
  print(format_table(results))
  if FLAGS.json:
    pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1))


def define_flags() -> None:
  flags.DEFINE_string("prepared", "", "Prepared directory to read (default: make the synthetic "
                      "corpus in a temporary directory and time its preparation).")
  flags.DEFINE_integer("videos", 16, "Synthetic videos to generate without --prepared.")
  flags.DEFINE_integer("prepare_workers", max(1, os.cpu_count() or 1),
                       "Processes for the timed preparation (local workers, or the Beam "
                       "DirectRunner's worker processes).")
  flags.DEFINE_list("runners", ["local"], "Preparation runners to time: local, beam.")
  flags.DEFINE_integer("videos_per_shard", 4, "Shard size of the timed preparation (the local "
                       "runner gives each worker whole shards: keep a shard per worker).",
                       lower_bound=1)
  flags.DEFINE_list("detect_every", ["1"], "prepare (and eval --eval_windows) --detect_every "
                    "values to time.")
  flags.DEFINE_bool("per_stage", False, "Also time each preparation stage per clip and "
                    "measure the crop agreement of --detect_every > 1 and of centre crops.")
  flags.DEFINE_bool("eval_windows", False, "Also time the eval binary's window inputs (decode, "
                    "faces, crops, fbank; one process) per --detect_every value.")
  flags.DEFINE_string("eval_data", "", "Raw videos for --eval_windows: a FakeAVCeleb directory "
                      "or a CSV (default: the synthetic corpus of --videos videos).")
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
