"""The input bench's eval timings (``data_pipelines.bench --eval_windows``, ``--eval_shards``):
the eval binary's window inputs per second in one process, and at scale its window shards cut
per runner, read back, and scored by untrained models on this process's devices; with the
CPU-second accounting and the model of the scorer's batch padding they use."""

from __future__ import annotations

import json
import pathlib
import resource
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from configs import common
from havic_jax.media.windows import MAX_SECONDS
from havic_jax.models.config import ModelConfig

SHARD_RUNS = ("local:0", "local:2", "beam:2", "beam:1")
SCORING_MODELS = ("tiny", "base")
INPUT_SIZES = ("image_size", "patch_size", "audio_frames", "mel_bins", "audio_patch_size")


def time_eval_windows(data_path: str, detect_every: int) -> Dict[str, Any]:
  """Windows/s of the eval binary's window inputs (``inputs.window_inputs``, workers=0) of the
  videos of ``data_path`` with faces detected on every ``detect_every``-th sampled frame, after
  one warm-up video (MTCNN loading). Per core: windows per CPU second of this process (all its
  threads), which other jobs on the machine do not lower."""
  from havic_jax.evaluation import inputs, videos
  data = videos.load_data(data_path)
  model_config = ModelConfig()
  list(inputs.window_inputs(data.videos[:1], data, model_config, MAX_SECONDS, False, None, 0,
                            detect_every=detect_every))
  wall, cpu = time.perf_counter(), time.process_time()
  made = list(inputs.window_inputs(data.videos, data, model_config, MAX_SECONDS, False, None, 0,
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
  from havic_jax.models.havic_models import build_model, example_inputs
  model = common.model_config(size, **{key: common.BASE_MODEL[key] for key in INPUT_SIZES})
  model_config = model_config_from(model)
  params = nn.unbox(jax.jit(build_model(model_config, "finetune").init)(
      jax.random.key(0), *example_inputs(model_config, kept_tokens=False))["params"])
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
  model_config = scorer.model_config
  side = model_config.image_size
  video = np.zeros((scorer.batch_size, model_config.num_frames, side, side, 3), np.uint8)
  audio = np.zeros((scorer.batch_size, model_config.audio_frames, model_config.mel_bins),
                   np.float32)
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
