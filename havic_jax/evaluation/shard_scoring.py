"""Scoring window shards on every device of every host, resumably.

Process p of P scores shards p, p + P, p + 2P, ... of the plan on its own devices (windows of
several videos batched and split over them, ``WindowScorer``; the next shard is read on a
thread meanwhile) and writes each shard's
per-video results to ``OUTPUT/scores/windows-IIIII-of-NNNNN.json`` so that it appears complete
or not at all; a re-run skips the shards whose results are there, so a killed run resumes where
it stopped and no video is scored twice. :func:`merged_results` reads every shard's results
back for the report.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tqdm

from havic_jax import storage
from havic_jax.evaluation import per_video, reports, window_shards
from havic_jax.evaluation.scoring import WindowScorer
from havic_jax.evaluation.videos import EvalVideo

SCORES_DIR = "scores"
ResultKey = Tuple[str, Optional[str]]  # (video id, condition)


def result_path(output: storage.PathLike, shard_file: str) -> Any:
  """Where the per-video results of a window shard are written."""
  return storage.path(output) / SCORES_DIR / shard_file.replace(".array_record", ".json")


def condition_suffix(condition: Optional[str]) -> str:
  """The video-id suffix of a re-encoded video's results (as the one-process eval writes)."""
  return "" if condition is None else f"@{condition}"


def score_shards(windows: str, manifest: Mapping[str, Any], scorer: WindowScorer,
                 videos: Mapping[str, EvalVideo], output: storage.PathLike,
                 process_index: int = 0, process_count: int = 1) -> Dict[str, float]:
  """Scores this process's share of the shards that have no results yet; returns its
  throughput (shards, videos, windows, seconds, windows/s)."""
  shards = manifest["shards"]
  mine = [s for i, s in enumerate(shards) if i % process_count == process_index]
  todo = [s for s in mine if not result_path(output, s["file"]).is_file()]
  (storage.path(output) / SCORES_DIR).mkdir(parents=True, exist_ok=True)
  started, num_videos, num_windows = time.perf_counter(), 0, 0
  bar = tqdm.tqdm(total=sum(len(s["tasks"]) for s in todo), desc="scoring shards", unit="video")
  read = lambda shard: list(window_shards.read_shard(windows, shard["file"]))
  reader = concurrent.futures.ThreadPoolExecutor(1)  # reads the next shard during this one
  ahead = reader.submit(read, todo[0]) if todo else None
  for position, shard in enumerate(todo):
    pairs = ahead.result()
    if position + 1 < len(todo):
      ahead = reader.submit(read, todo[position + 1])
    results: List[Dict[str, Any]] = []
    items = ((index, w.video, w.audio) for index, (_, w) in enumerate(pairs))
    for index, outputs in scorer.score_stream(items):
      task, inputs = pairs[index]
      result = per_video.video_result(videos[task.video_id], inputs, outputs, scorer.classifier,
                                      condition_suffix(task.condition))
      results.append({"condition": task.condition, **dataclasses.asdict(result)})
      num_windows += result.num_windows
      bar.update(1)
    num_videos += len(results)
    target = result_path(output, shard["file"])
    with storage.staged(target) as staged:
      staged.write_text(json.dumps({"file": shard["file"], "results": results}))
  reader.shutdown()
  bar.close()
  seconds = time.perf_counter() - started
  return {"shards": len(todo), "videos": num_videos, "windows": num_windows,
          "seconds": seconds, "videos_per_second": num_videos / max(seconds, 1e-9),
          "windows_per_second": num_windows / max(seconds, 1e-9)}


def merged_results(output: storage.PathLike, manifest: Mapping[str, Any]
                   ) -> Dict[ResultKey, reports.VideoResult]:
  """Every task's result, from the shards' result files (all must be there)."""
  merged: Dict[ResultKey, reports.VideoResult] = {}
  missing = [s["file"] for s in manifest["shards"]
             if not result_path(output, s["file"]).is_file()]
  if missing:
    raise window_shards.WindowShardError(
        f"{storage.path(output) / SCORES_DIR}: no results for {len(missing)} window shards "
        f"({missing[:3]}); re-run the scoring command to finish them")
  for shard in manifest["shards"]:
    for entry in json.loads(result_path(output, shard["file"]).read_text())["results"]:
      condition = entry.pop("condition")
      key = (entry["video_id"][:len(entry["video_id"]) - len(condition_suffix(condition))],
             condition)
      merged[key] = reports.VideoResult(**entry)
  return merged
