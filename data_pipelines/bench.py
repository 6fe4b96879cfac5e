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

from __future__ import annotations

import itertools
import json
import os
import pathlib
import platform
import resource
import tempfile
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from absl import app, flags

from configs import common
from havic_jax import cli
from havic_jax.data import input_pipeline, records
from havic_jax.media.windows import MAX_SECONDS
from havic_jax.models.config import ModelConfig

FLAGS = flags.FLAGS
SHARD_RUNS = ("local:0", "local:2", "beam:2", "beam:1")
SCORING_MODELS = ("tiny", "base")
INPUT_SIZES = ("image_size", "patch_size", "audio_frames", "mel_bins", "audio_patch_size")


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


def cpu_seconds() -> float:
  """User and system CPU seconds of this process and of its children that have ended and been
  waited for (the local runner's worker pool once joined, the DirectRunner's SDK workers once
  the pipeline is done)."""
  return sum(usage.ru_utime + usage.ru_stime for usage in
             (resource.getrusage(resource.RUSAGE_SELF),
              resource.getrusage(resource.RUSAGE_CHILDREN)))


def shard_run(spec: str) -> Tuple[str, int, str]:
  """(runner, workers, Beam options) of a ``--shard_runs`` entry: ``local:N`` (N worker
  processes, 0: this one) or ``beam:N`` (the DirectRunner: N worker processes in
  multi-processing mode, or in this process for N = 1)."""
  runner, _, count = spec.partition(":")
  workers = int(count or 0)
  if runner == "local":
    return runner, workers, ""
  if runner != "beam" or workers < 1:
    raise ValueError(f"--shard_runs entries are local:N or beam:N (N >= 1), got {spec!r}")
  mode = "multi_processing" if workers > 1 else "in_memory"
  return runner, workers, (f"--runner=DirectRunner --direct_num_workers={workers} "
                           f"--direct_running_mode={mode}")


def shard_tasks(directory: pathlib.Path, manifest: Dict[str, Any]
                ) -> List[List[Dict[str, Any]]]:
  """The tasks of each shard (video id, condition, status, windows), from the shards'
  descriptions."""
  return [json.loads((directory / shard["file"]).with_suffix(".json").read_text())["tasks"]
          for shard in manifest["shards"]]


def batch_fill(shard_counts: Sequence[Sequence[int]], batch_size: int) -> float:
  """The share of scored batch rows that hold a window (the others are padding) when
  ``WindowScorer.score_stream`` scores shards whose tasks have ``shard_counts`` windows: it
  scores the videos queued so far together as soon as they hold ``batch_size`` windows (and
  the rest at the end of a shard), padded to whole batches."""
  windows = rows = 0
  for counts in shard_counts:
    groups, queued = [], 0
    for count in counts:
      queued += count
      if queued >= batch_size:
        groups.append(queued)
        queued = 0
    groups.append(queued)
    windows += sum(groups)
    rows += sum(-(-group // batch_size) * batch_size for group in groups)
  return windows / max(rows, 1)


def time_window_shards(data: Any, output: pathlib.Path, spec: str, videos_per_shard: int
                       ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Cuts the videos of ``data`` (``evaluation.videos.EvalData``) into window shards at the
  base model's input size under ``output`` with the ``--shard_runs`` entry ``spec``; returns
  (figures, the shards' manifest). CPU seconds include the runner's worker processes, their
  start-up and MTCNN loading."""
  from havic_jax.evaluation import window_shards
  runner, workers, beam_options = shard_run(spec)
  tasks = [window_shards.Task(video.video_id, video.path) for video in data.videos]
  options = window_shards.WindowOptions(ModelConfig(), MAX_SECONDS, False, False)
  wall, cpu = time.perf_counter(), cpu_seconds()
  manifest = window_shards.write_windows(
      output, tasks, options, {"path": data.path, "kind": data.kind, "sha256": data.hash},
      videos_per_shard, runner, beam_options, workers)
  wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
  done = [task for shard in shard_tasks(output, manifest) for task in shard]
  windows = sum(task["windows"] for task in done)
  statuses = [task["status"] for task in done]
  counts = {status: statuses.count(status) for status in sorted(set(statuses))}
  stored = sum(path.stat().st_size for path in output.glob("*.array_record"))
  return {"stage": "window_shards", "run": spec, "runner": runner, "workers": workers,
          "beam_options": beam_options, "videos": len(tasks), "windows": windows,
          "shards": len(manifest["shards"]), "seconds": wall, "cpu_seconds": cpu,
          "cores_used": cpu / wall, "windows_per_second": windows / wall,
          "windows_per_cpu_second": windows / cpu,
          "bytes_per_window": stored / max(windows, 1), "statuses": counts}, manifest


def time_shard_reads(windows: pathlib.Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
  """Windows per CPU second of reading the shards of ``manifest`` back (``read_shard``: the
  ArrayRecord reads and the records' decoding), the work a scoring process does on its one
  thread before its devices see the windows; after one read of the first shard (imports)."""
  from havic_jax.evaluation import window_shards
  files = [shard["file"] for shard in manifest["shards"]]
  list(window_shards.read_shard(str(windows), files[0]))
  wall, cpu = time.perf_counter(), time.process_time()
  count = sum(0 if inputs.video is None else len(inputs.video) for file in files
              for _, inputs in window_shards.read_shard(str(windows), file))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {"stage": "shard_read", "windows": count, "seconds": wall, "cpu_seconds": cpu,
          "windows_per_second": count / wall, "windows_per_cpu_second": count / cpu}


def scoring_export(size: str, directory: pathlib.Path) -> pathlib.Path:
  """An export (every module) of an untrained fine-tuning model of ``size`` ("tiny", "base")
  at the base model's input size (video 16×224×224, fbank 1024×128): its speed, not its
  scores."""
  import flax.linen as nn
  import jax
  from havic_jax.checkpoints import exported
  from havic_jax.models.config import model_config_from
  from havic_jax.models.havic import build_model, example_inputs
  model = common.model_config(size, **{key: common.BASE_MODEL[key] for key in INPUT_SIZES})
  cfg = model_config_from(model)
  params = nn.unbox(jax.jit(build_model(cfg, "finetune").init)(
      jax.random.key(0), *example_inputs(cfg, "finetune"))["params"])
  exported.export_params(params, model, "finetune", "reference", str(directory),
                         modules=list(params))
  return directory


def time_scoring(size: str, data: Any, windows: pathlib.Path, manifest: Dict[str, Any],
                 batch_size: int, seconds: float, scratch: pathlib.Path) -> Dict[str, Any]:
  """Windows/s of ``score_shards`` with an untrained ``size`` model (``scoring_export``) on
  this process's devices, shard after shard of ``manifest`` until ``seconds`` have passed (at
  least one), after one batch that compiles the forward and one read of the first shard; with
  its model GFLOP per window (matmuls of the forward, ``havic_jax.training.flops.matmul_flops``)
  and the share of batch rows that held windows (``batch_fill``)."""
  import jax
  from havic_jax import sharding
  from havic_jax.training.flops import matmul_flops
  from havic_jax.checkpoints import loading
  from havic_jax.evaluation import shard_scoring, window_shards
  from havic_jax.evaluation.scoring import WindowScorer, window_forward
  checkpoint = loading.load(str(scoring_export(size, scratch / f"export_{size}")))
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.local_devices())
  scorer = WindowScorer(checkpoint, mesh, batch_size, classifier=True)
  cfg = scorer.cfg
  video = np.zeros((scorer.batch_size, cfg.num_frames, cfg.image_size, cfg.image_size, 3),
                   np.uint8)
  audio = np.zeros((scorer.batch_size, cfg.audio_frames, cfg.mel_bins), np.float32)
  flops = matmul_flops(jax.make_jaxpr(window_forward(checkpoint, True))(
      scorer.params, video[:1], audio[:1]).jaxpr)
  started = time.perf_counter()
  scorer.score(video, audio)
  compile_seconds = time.perf_counter() - started
  list(window_shards.read_shard(str(windows), manifest["shards"][0]["file"]))
  by_id = {item.video_id: item for item in data.videos}
  scored: List[Dict[str, Any]] = []
  wall, cpu = time.perf_counter(), cpu_seconds()
  for shard in manifest["shards"]:
    shard_scoring.score_shards(str(windows), {"shards": [shard]}, scorer, by_id,
                               scratch / f"scores_{size}")
    scored.append(shard)
    if time.perf_counter() - wall >= seconds:
      break
  wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
  counts = [[task["windows"] for task in shard]
            for shard in shard_tasks(windows, {"shards": scored})]
  count = sum(map(sum, counts))
  devices = mesh.devices.size
  fill = batch_fill(counts, scorer.batch_size)
  return {"stage": "scoring", "model": size, "devices": devices,
          "device_kind": jax.devices()[0].device_kind, "batch_size": scorer.batch_size,
          "videos": sum(map(len, counts)), "windows": count, "batch_fill": fill,
          "compile_seconds": compile_seconds, "seconds": wall, "cpu_seconds": cpu,
          "windows_per_second": count / wall,
          "windows_per_second_per_device": count / wall / devices,
          "windows_per_cpu_second": count / cpu, "gflop_per_window": flops / 1e9,
          "tflop_per_second": flops * count / fill / wall / 1e12 if count else 0.0}


def time_eval_shards(data_path: str, scratch: pathlib.Path, runs: Sequence[str],
                     models: Sequence[str], videos_per_shard: int, batch_size: int,
                     score_seconds: float) -> List[Dict[str, Any]]:
  """The window shards of the videos of ``data_path`` cut once per ``runs`` entry (after one
  warm-up video in this process: MTCNN loading), and the first run's shards read back and
  scored by each of ``models``."""
  from havic_jax.evaluation import videos, window_shards
  if not runs:
    raise ValueError("--eval_shards needs at least one --shard_runs entry")
  data = videos.load_data(data_path)
  window_shards.window_inputs_of(
      window_shards.Task(data.videos[0].video_id, data.videos[0].path),
      window_shards.WindowOptions(ModelConfig(), MAX_SECONDS, False, False))
  results, cut = [], []
  for spec in runs:
    output = scratch / f"windows_{spec.replace(':', '_')}"
    figures, manifest = time_window_shards(data, output, spec, videos_per_shard)
    results.append(figures)
    cut.append((output, manifest))
  results.append(time_shard_reads(*cut[0]))
  for size in models:
    results.append(time_scoring(size, data, *cut[0], batch_size, score_seconds, scratch))
  return results


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
    if r["stage"] == "window_shards":
      lines.append(f"window shards ({r['run']}): {r['windows']} windows of {r['videos']} "
                   f"videos in {r['seconds']:.1f} s, {r['windows_per_second']:.2f} windows/s, "
                   f"{r['windows_per_cpu_second']:.2f} per CPU second ({r['cores_used']:.2f} "
                   f"cores used); {r['bytes_per_window'] / 2**20:.2f} MiB per window; " +
                   ", ".join(f"{n} {s}" for s, n in r["statuses"].items()))
      continue
    if r["stage"] == "shard_read":
      lines.append(f"window shards read back: {r['windows']} windows in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second']:.1f} windows/s, "
                   f"{r['windows_per_cpu_second']:.1f} per CPU second")
      continue
    if r["stage"] == "scoring":
      lines.append(f"scoring ({r['model']}, batch {r['batch_size']} on {r['devices']} × "
                   f"{r['device_kind']}): {r['windows']} windows in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second_per_device']:.3f} windows/s per device, "
                   f"{r['windows_per_cpu_second']:.3f} per CPU second; "
                   f"{r['gflop_per_window']:.2f} GFLOP per window, "
                   f"{r['tflop_per_second']:.4f} TFLOP/s, batch fill {r['batch_fill']:.2f}, "
                   f"compile {r['compile_seconds']:.1f} s")
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
