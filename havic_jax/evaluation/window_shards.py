"""Window shards: the eval binary's video work (decode, face crops, 16-frame windows at 5 fps
with a 0.4 s hop, fbank, the robustness re-encodes) done once, on this machine's processes or
on an Apache Beam pipeline, and stored for scoring on any number of accelerator hosts.

A window shard ``windows-IIIII-of-NNNNN.array_record`` holds one record per (video,
condition) task, in the order of the plan, framed by ``havic_jax.data.record_codec``: ``MAGIC``,
a little-endian uint32 header length, a UTF-8 JSON header (format version, video id, condition,
status, detail, scored head, window starts and face tracks, array shapes) and the payload: video
uint8 [n, 16, S, S, 3] and audio float32 [n, audio_frames, mel_bins], little-endian and
uncompressed, so that scoring them gives exactly the scores of the one-process eval. Every task
has a record, also one without windows (a file that cannot be read, ...): its status says why. A
``.json`` description beside each shard lists its tasks and their statuses and is written last
(``storage.staged``: each file appears complete or not at all), so a re-run skips finished
shards. ``windows.json`` holds the plan (the tasks of every shard) and the options the windows
were cut with.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tqdm
from absl import logging
from etils import epath

from havic_jax import storage
from havic_jax.data import record_codec, shard_writer
from havic_jax.errors import UserError
from havic_jax.evaluation import inputs
from havic_jax.evaluation.inputs import WindowInputs
from havic_jax.models.config import ModelConfig

FORMAT_VERSION = 1
MAGIC = b"HAVW"
MANIFEST = "windows.json"
SHARD_PREFIX = "windows"
COUNTER_NAMESPACE = "eval_windows"
RUNNERS = ("local", "beam")


class WindowShardError(UserError):
  """Window shards that are missing, unfinished or cut for another request."""


@dataclasses.dataclass(frozen=True)
class Task:
  """One video to cut into windows: ``condition`` None (as it is) or a robustness re-encode
  (``reencode.CONDITIONS``)."""

  video_id: str
  path: str
  condition: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class WindowOptions:
  """How windows are cut: the model's input sizes (``model_config``), the stretch scored, the
  audio-missing mode, windows per face track and the keyframe detection."""

  model_config: ModelConfig
  max_seconds: float
  no_audio: bool
  face_tracks: bool
  detect_every: int = 1

  def description(self) -> Dict[str, Any]:
    """What the windows depend on, JSON-ready (``windows.json``)."""
    return {"image_size": self.model_config.image_size, "num_frames": self.model_config.num_frames,
            "audio_frames": self.model_config.audio_frames, "mel_bins": self.model_config.mel_bins,
            "max_seconds": self.max_seconds, "no_audio": self.no_audio,
            "face_tracks": self.face_tracks, "detect_every": self.detect_every}


def rebased(tasks: Sequence[Task], root: str, uri: str) -> List[Task]:
  """``tasks`` (files under the directory ``root``) with each path moved to the same place under
  ``uri`` (e.g. ``gs://BUCKET/DIR``): where workers that do not see ``root`` read them."""
  moved = []
  for task in tasks:
    relative = os.path.relpath(task.path, root)
    if relative.startswith(os.pardir):
      raise WindowShardError(f"{task.path}: not under {root}, so --input_uri cannot locate it; "
                             f"list only videos under the directory of --data")
    moved.append(dataclasses.replace(task, path=f"{uri.rstrip('/')}/{relative}"))
  return moved


def shard_name(index: int, count: int) -> str:
  return f"{SHARD_PREFIX}-{index:05d}-of-{count:05d}.array_record"


def window_inputs_of(task: Task, options: WindowOptions) -> WindowInputs:
  """The windows of one task, by the same function as the one-process eval; never raises."""
  return inputs.raw_video_inputs(
      (task.path, options.model_config, options.max_seconds, options.no_audio, task.condition,
       options.face_tracks, options.detect_every))


def encode(task: Task, windows: WindowInputs) -> bytes:
  """One task's record (see the module docstring)."""
  arrays = []
  header = {"video_id": task.video_id, "condition": task.condition, "status": windows.status,
            "detail": windows.detail, "head": windows.head}
  if windows.video is not None:
    video = np.ascontiguousarray(windows.video, np.uint8)
    audio = np.ascontiguousarray(windows.audio, "<f4")
    arrays = [video.tobytes(), audio.tobytes()]
    header.update(video_shape=list(video.shape), audio_shape=list(audio.shape),
                  starts=windows.starts.tolist(),
                  tracks=None if windows.tracks is None else windows.tracks.tolist())
  return record_codec.encode(MAGIC, header, arrays)


def decode(data: bytes) -> Tuple[str, Optional[str], WindowInputs]:
  """(video id, condition, windows) of a record :func:`encode` wrote."""
  header, offset = record_codec.decode(data, MAGIC, what="window record",
                                       remedy="cut the windows again", error=WindowShardError)
  windows = WindowInputs(header["status"], header["detail"], head=header["head"])
  if "video_shape" in header:
    video_shape, audio_shape = tuple(header["video_shape"]), tuple(header["audio_shape"])
    count = int(np.prod(video_shape))
    windows.video = np.frombuffer(data, np.uint8, count, offset).reshape(video_shape)
    windows.audio = np.frombuffer(data, "<f4", int(np.prod(audio_shape)),
                                  offset + count).reshape(audio_shape).astype(np.float32)
    windows.starts = np.asarray(header["starts"], np.float64)
    windows.tracks = None if header["tracks"] is None else np.asarray(header["tracks"])
  return header["video_id"], header["condition"], windows


def plan(tasks: Sequence[Task], videos_per_shard: int) -> List[List[Task]]:
  """The tasks in shards of ``videos_per_shard``, in order."""
  return [list(tasks[i:i + videos_per_shard]) for i in range(0, len(tasks), videos_per_shard)]


def task_fields(task: Task) -> Dict[str, Any]:
  return dataclasses.asdict(task)


def write_window_shard(index: int, outcomes: Iterable[Tuple[Task, WindowInputs]], output: str,
                       count: int) -> Dict[str, Any]:
  """Writes shard ``index`` of ``count`` from its tasks' windows (in plan order) and its
  ``.json`` description; returns the description."""
  path = storage.path(output) / shard_name(index, count)
  tasks = []

  def shard_records() -> Iterator[bytes]:
    for task, windows in outcomes:
      tasks.append({"video_id": task.video_id, "condition": task.condition,
                    "status": windows.status,
                    "windows": 0 if windows.video is None else len(windows.video)})
      yield encode(task, windows)

  with storage.staged(path) as staging:
    shard_writer.write_array_record(staging, shard_records())
  description = {"file": path.name, "tasks": tasks}
  with storage.staged(path.with_suffix(".json")) as staging:
    staging.write_text(json.dumps(description))
  return description


def finished(output: epath.Path, index: int, count: int, tasks: Sequence[Task]) -> bool:
  """Whether a previous run wrote shard ``index`` of ``count`` for exactly ``tasks``."""
  path = output / shard_name(index, count)
  sidecar = path.with_suffix(".json")
  if not (path.is_file() and sidecar.is_file()):
    return False
  done = [(t["video_id"], t["condition"]) for t in json.loads(sidecar.read_text())["tasks"]]
  return done == [(t.video_id, t.condition) for t in tasks]


def _task_windows(fields: Dict[str, Any], options: WindowOptions) -> Tuple[Task, WindowInputs]:
  task = Task(**fields)
  return task, window_inputs_of(task, options)


def _counts(outcome: Tuple[Task, WindowInputs]) -> Dict[str, int]:
  windows = outcome[1]
  return {"videos": 1, "windows": 0 if windows.video is None else len(windows.video),
          f"status_{windows.status}": 1}


def _write_beam_shard(index: int, outcomes: Iterable[Tuple[Task, WindowInputs]], output: str,
                      count: int) -> None:
  description = write_window_shard(index, outcomes, output, count)
  logging.info("wrote %s: %d videos", description["file"], len(description["tasks"]))


def run_local(output: epath.Path, shards: Sequence[Sequence[Task]], pending: Sequence[int],
              options: WindowOptions, workers: int) -> None:
  """The ``pending`` shards on this machine: each task's windows on ``workers`` processes (0:
  this one), each shard written when its tasks are done."""
  tasks = [(dataclasses.asdict(task), options) for i in pending for task in shards[i]]
  bar = tqdm.tqdm(total=len(tasks), desc="cutting windows", unit="video")
  if workers > 0:
    pool = multiprocessing.get_context("spawn").Pool(workers)
    results = pool.imap(_star_task_windows, tasks)
  else:
    pool, results = None, map(_star_task_windows, tasks)
  try:
    for index in pending:
      outcomes = [next(results) for _ in shards[index]]
      bar.update(len(outcomes))
      write_window_shard(index, outcomes, os.fspath(output), len(shards))
  finally:
    bar.close()
    if pool is not None:
      pool.close()
      pool.join()


def _star_task_windows(args: Tuple[Dict[str, Any], WindowOptions]) -> Tuple[Task, WindowInputs]:
  return _task_windows(*args)


def run_beam(output: epath.Path, shards: Sequence[Sequence[Task]], pending: Sequence[int],
             options: WindowOptions, beam_options: str) -> None:
  """The ``pending`` shards as an Apache Beam pipeline (``data.beam.run_sharded``, the
  preparation's), built from the command-line ``beam_options``; logs the counters' totals."""
  from havic_jax.data import beam
  totals = beam.run_sharded(
      output / beam.LISTING, beam.listing_lines({i: shards[i] for i in pending}, task_fields),
      functools.partial(_task_windows, options=options), _counts,
      functools.partial(_write_beam_shard, output=os.fspath(output), count=len(shards)),
      beam_options, COUNTER_NAMESPACE)
  logging.info("Beam windows: %s", ", ".join(f"{n} {k}" for k, n in sorted(totals.items())))


def manifest_of(shards: Sequence[Sequence[Task]], options: WindowOptions,
                data: Dict[str, Any]) -> Dict[str, Any]:
  return {"format_version": FORMAT_VERSION, "data": data, "options": options.description(),
          "shards": [{"file": shard_name(i, len(shards)), "tasks": [task_fields(t) for t in s]}
                     for i, s in enumerate(shards)]}


def write_windows(output: storage.PathLike, tasks: Sequence[Task], options: WindowOptions,
                  data: Dict[str, Any], videos_per_shard: int = 16, runner: str = "local",
                  beam_options: str = "", workers: int = 0) -> Dict[str, Any]:
  """Cuts the windows of ``tasks`` into shards under ``output`` (``runner`` "local" on
  ``workers`` processes, or "beam" with ``beam_options``), skipping the shards a previous run
  finished; returns the manifest (``windows.json``). ``data``: what the tasks come from (path,
  kind, hash), recorded so that scoring can check it."""
  if runner not in RUNNERS:
    raise WindowShardError(f"--runner must be one of {RUNNERS}, got {runner!r}")
  out = storage.path(output)
  out.mkdir(parents=True, exist_ok=True)
  shards = plan(tasks, videos_per_shard)
  manifest = manifest_of(shards, options, data)
  existing = out / MANIFEST
  if existing.is_file():
    previous = json.loads(existing.read_text())
    if {k: previous.get(k) for k in ("data", "options")} != {k: manifest[k] for k in
                                                              ("data", "options")}:
      raise WindowShardError(
          f"{existing}: windows of other videos or options ({previous.get('options')}, data "
          f"{previous.get('data', {}).get('path')}); give --windows a new directory")
    if previous["shards"] != manifest["shards"]:
      raise WindowShardError(f"{existing}: planned with another --videos_per_shard; keep "
                             f"the first run's or give --windows a new directory")
  existing.write_text(json.dumps(manifest, indent=1))
  pending = [i for i, shard in enumerate(shards) if not finished(out, i, len(shards), shard)]
  logging.info("windows: %d shards, %d finished by a previous run, %d to cut (%s runner)",
               len(shards), len(shards) - len(pending), len(pending), runner)
  if pending:
    if runner == "beam":
      run_beam(out, shards, pending, options, beam_options)
    else:
      run_local(out, shards, pending, options, workers)
  return manifest


def open_windows(directory: storage.PathLike, options: WindowOptions,
                 data: Dict[str, Any]) -> Dict[str, Any]:
  """The manifest of finished window shards in ``directory`` cut from ``data`` with
  ``options``; errors name what is missing or different."""
  root = storage.path(directory)
  path = root / MANIFEST
  if not path.is_file():
    raise WindowShardError(f"{path}: missing; cut the windows first (python -m havic_jax.eval "
                           f"--windows={directory} --windows_only ...)")
  manifest = json.loads(path.read_text())
  if manifest["options"] != options.description() or manifest["data"] != data:
    raise WindowShardError(f"{path}: cut for other videos or options ({manifest['options']}); "
                           f"cut them again into a new --windows directory")
  count = len(manifest["shards"])
  unfinished = [s["file"] for i, s in enumerate(manifest["shards"])
                if not finished(root, i, count, [Task(**t) for t in s["tasks"]])]
  if unfinished:
    raise WindowShardError(f"{directory}: {len(unfinished)} of {count} window shards are not "
                           f"finished ({unfinished[:3]}); re-run the windows step to finish them")
  return manifest


def read_shard(directory: str, file: str) -> Iterator[Tuple[Task, WindowInputs]]:
  """The (task, windows) records of one shard of a local ``directory``, in order."""
  import grain
  source = grain.sources.ArrayRecordDataSource(
      [os.path.join(storage.local_only(directory, "--windows"), file)])
  for index in range(len(source)):
    video_id, condition, windows = decode(source[index])
    yield Task(video_id, "", condition), windows
