"""Raw videos -> ArrayRecord shards of 3.2 s clips and a manifest.json.

  python -m data_pipelines.prepare --dataset=fakeavceleb --input=DIR --output=DIR [--workers=N]
  python -m data_pipelines.prepare ... --runner=beam [--beam_options="--runner=DirectRunner
      --direct_num_workers=2 --direct_running_mode=multi_processing"]

Each video is decoded, cut into clips, face-cropped and written as clip records
(``havic_jax.data.records``) by :func:`process_video`. Videos go to shards in a fixed order,
``--videos_per_shard`` each; a shard is written to a temporary file, renamed when complete (a
``gs://`` object is uploaded whole) and described by a ``.json`` file beside it
(``havic_jax.data.shard_writer``), so re-running the command skips the finished shards
(resume). A video that cannot be used (corrupt, not a video, no audio, no face, too short) is
listed in the manifest with its reason; the run goes on and exits 0.

The shards are written by a shard runner: :func:`run_local` (default) on ``--workers``
processes of this machine, or ``havic_jax.data.beam.runner`` (``--runner=beam``), the same
per-video function and shard writer as an Apache Beam pipeline (DirectRunner, Dataflow, Flink,
Spark), which writes the same files. The output may be a ``gs://`` location
(``havic_jax.storage``). The videos are listed from ``--input``, a local (or mounted) path;
``--input_uri`` makes the workers read them from the same places under a ``gs://`` location
instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import multiprocessing
import os
import queue
import traceback
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import tqdm
from absl import logging
from etils import epath

from havic_jax import storage
from havic_jax.data import records
from havic_jax.data.shard_writer import (VideoOutcome, finished_shard, write_manifest,
                                         write_shard)
from havic_jax.data.sources import FAKEAVCELEB_SPLIT_SEED, READERS, VideoEntry, read_fakeavceleb
from havic_jax.media.clips import extract_clips
from havic_jax.media.decode import CLIP_SECONDS, Media, MediaError, read_media
from havic_jax.media.faces import Detector, centre_detector, mtcnn_detector, process_detector

# Why a video yields no clip; the manifest counts videos per reason.
REJECT_REASONS = ("unreadable", "no_audio", "too_short", "no_face", "error")


class VideoRejected(Exception):
  """A video that yields no clip; ``code`` is one of REJECT_REASONS."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


CROPS = ("face", "centre")  # MTCNN face crops, or every frame's centre square (no faces)


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """frame_encoding: "jpeg" or "raw"; clip_hop: seconds between clip starts (None: back to
  back); max_clips: per video (None: all); crop: "face" (MTCNN, spec §1) or "centre" (the
  frame's centre square, for out-of-domain clips without faces); detect_every: run the face
  detector on every k-th frame of a clip (and its last) and interpolate the boxes between
  (1: every frame; see ``havic_jax.media.faces.crop_faces``)."""

  frame_encoding: str = "jpeg"
  clip_hop: Optional[float] = None
  max_clips: Optional[int] = None
  crop: str = "face"
  detect_every: int = 1

  def __post_init__(self):
    if self.crop not in CROPS:
      raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
    if self.detect_every < 1:
      raise ValueError(f"detect_every must be at least 1, got {self.detect_every}")


def read_video(path: str) -> Media:
  """``read_media`` of a local file, or of a ``gs://`` object copied to a temporary file
  first; errors (MediaError) name ``path``."""
  if not storage.is_remote(path):
    return read_media(path)
  try:
    with storage.local_copy(path) as local:
      try:
        return dataclasses.replace(read_media(local), path=path)
      except MediaError as error:
        raise MediaError(str(error).replace(local, path)) from error
  except OSError as error:
    raise MediaError(f"{path}: cannot read ({error})") from error


def rebased(entries: Sequence[VideoEntry], root: str, uri: str) -> List[VideoEntry]:
  """``entries`` (files under the directory ``root``) with each path moved to the same place
  under ``uri`` (e.g. ``gs://BUCKET/DIR``): where workers that do not see ``root`` read them."""
  moved = []
  for entry in entries:
    relative = os.path.relpath(entry.path, root)
    if relative.startswith(os.pardir):
      raise ValueError(f"{entry.path}: not under --input={root}, so --input_uri cannot locate "
                       f"it; list only videos under --input")
    moved.append(dataclasses.replace(entry, path=f"{uri.rstrip('/')}/{relative}"))
  return moved


def video_records(entry: VideoEntry, detect: Detector, options: PrepareOptions
                  ) -> tuple[List[bytes], List[str]]:
  """(serialised clip records, reasons of rejected clips) of one video.

  Raises :class:`VideoRejected` when the video yields no clip at all."""
  try:
    media = read_video(entry.path)
  except MediaError as error:
    raise VideoRejected("unreadable", str(error)) from error
  if media.audio is None:
    raise VideoRejected("no_audio", f"{entry.path}: no audio track")
  clips, rejected = extract_clips(media, detect, hop_seconds=options.clip_hop,
                                  max_clips=options.max_clips,
                                  detect_every=options.detect_every)
  if not clips:
    if media.duration < CLIP_SECONDS or not rejected:
      raise VideoRejected("too_short", f"{entry.path}: {media.duration:.2f} s is shorter than "
                                       f"one {CLIP_SECONDS} s clip")
    code = "no_face" if any("face" in reason for reason in rejected) else "too_short"
    raise VideoRejected(code, f"{entry.path}: no usable clip ({rejected[0]})")
  encoded = [records.encode(records.ClipRecord(
      frames=clip.frames, audio=clip.audio, audio_label=entry.audio_label,
      visual_label=entry.visual_label, overall_label=entry.overall_label,
      category=entry.category, identity=entry.identity, video_id=entry.video_id,
      clip_start=clip.start), options.frame_encoding) for clip in clips]
  return encoded, rejected


_WORKER: Dict[str, Any] = {}


def _init_worker(progress: Optional[Any]) -> None:
  """Per-process state of :func:`run_local`'s workers: the progress queue."""
  _WORKER["progress"] = progress


def process_video(entry: VideoEntry, options: PrepareOptions) -> VideoOutcome:
  """The clips of one video, or why it has none; never raises for a bad file (any error is
  recorded as reason ``error`` with its traceback). The one per-video step of both runners."""
  try:
    detect = process_detector(mtcnn_detector if options.crop == "face" else centre_detector)
    encoded, dropped = video_records(entry, detect, options)
  except VideoRejected as error:
    logging.warning("skipping %s: %s", entry.video_id, error)
    return VideoOutcome(entry.video_id, rejection={
        "video_id": entry.video_id, "path": entry.path, "reason": error.code,
        "message": str(error)})
  except Exception as error:  # pylint: disable=broad-except
    # One bad file must never stop a long preparation run: record it and go on.
    logging.error("failed on %s: %s", entry.video_id, error)
    return VideoOutcome(entry.video_id, rejection={
        "video_id": entry.video_id, "path": entry.path, "reason": "error",
        "message": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(limit=5)})
  return VideoOutcome(entry.video_id, tuple(encoded), len(dropped))


def _reported(outcomes: Iterable[VideoOutcome]) -> Iterator[VideoOutcome]:
  """``outcomes``, counting each on this worker's progress queue (if any) as it passes."""
  for outcome in outcomes:
    yield outcome
    if _WORKER.get("progress") is not None:
      _WORKER["progress"].put(1)


def _shard_task(args) -> Dict[str, Any]:
  """Prepares and writes one shard: (output, index, count, entries, options)."""
  output, index, count, entries, options = args
  return write_shard(output, index, count,
                     _reported(process_video(entry, options) for entry in entries))


def split_into_shards(entries: Sequence[VideoEntry], videos_per_shard: int
                      ) -> List[List[VideoEntry]]:
  return [list(entries[i:i + videos_per_shard])
          for i in range(0, len(entries), videos_per_shard)]


# Writes the pending shards (index -> its videos, of ``count`` shards) into the output with
# the options: (output, count, pending, options) -> None.
ShardRunner = Callable[[epath.Path, int, Mapping[int, Sequence[VideoEntry]], PrepareOptions],
                       None]


def run_local(output: epath.Path, count: int, pending: Mapping[int, Sequence[VideoEntry]],
              options: PrepareOptions, workers: int = 1) -> None:
  """The shard runner of this machine: the ``pending`` shards on ``workers`` processes (1: in
  this process), with a per-video progress bar."""
  tasks = [(os.fspath(output), i, count, g, options) for i, g in sorted(pending.items())]
  bar = tqdm.tqdm(total=sum(len(g) for g in pending.values()), desc="videos", unit="video",
                  smoothing=0.05)
  if workers <= 1:
    _init_worker(None)
    for task in tasks:
      _shard_task(task)
      bar.update(len(task[3]))
    bar.close()
    return
  context = multiprocessing.get_context("spawn")
  progress = context.Manager().Queue()
  with context.Pool(workers, initializer=_init_worker, initargs=(progress,)) as pool:
    running = [pool.apply_async(_shard_task, (task,)) for task in tasks]
    while not all(r.ready() for r in running):
      try:
        bar.update(progress.get(timeout=0.5))
      except queue.Empty:
        pass
    for result in running:
      result.get()  # re-raises a worker's crash
  bar.update(bar.total - bar.n)
  bar.close()


def build_manifest(dataset: str, source: str, options: PrepareOptions,
                   entries: Sequence[VideoEntry], shards: Sequence[Dict[str, Any]]
                   ) -> Dict[str, Any]:
  """The dataset description the input pipelines read: shards, per-video record ranges and
  labels, splits (video ids), rejected videos with reasons, and counts."""
  by_id = {e.video_id: e for e in entries}
  videos, rejected, offset = [], [], 0
  for shard_index, shard in enumerate(shards):
    for video in shard["videos"]:
      entry = by_id[video["video_id"]]
      videos.append({"video_id": entry.video_id, "path": entry.path, "shard": shard_index,
                     "first_record": offset + video["first_record"], "clips": video["clips"],
                     "clips_rejected": video["clips_rejected"],
                     "audio_label": entry.audio_label, "visual_label": entry.visual_label,
                     "overall_label": entry.overall_label, "category": entry.category,
                     "identity": entry.identity, "method": entry.method})
    rejected.extend({k: v for k, v in r.items() if k != "traceback"} for r in shard["rejected"])
    offset += shard["records"]
  kept = {v["video_id"] for v in videos}
  splits: Dict[str, List[str]] = {}
  for entry in entries:
    for split in entry.splits:
      splits.setdefault(split, [])
      if entry.video_id in kept:
        splits[split].append(entry.video_id)
  reasons = {code: sum(r["reason"] == code for r in rejected) for code in REJECT_REASONS}
  return {
      "format_version": records.FORMAT_VERSION,
      "dataset": dataset,
      "source": str(source),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "frame_encoding": options.frame_encoding,
      "options": dataclasses.asdict(options),
      "counts": {"videos": len(entries), "videos_prepared": len(videos),
                 "videos_rejected": len(rejected), "rejected_by_reason": reasons,
                 "clips": offset, "clips_rejected": sum(s["clips_rejected"] for s in shards)},
      "shards": [{"file": s["file"], "records": s["records"]} for s in shards],
      "splits": splits,
      "videos": videos,
      "rejected": rejected,
  }


def prepare(dataset: str, source: str, output: storage.PathLike, workers: int = 1,
            videos_per_shard: int = 64, options: PrepareOptions = PrepareOptions(),
            split_seed: int = FAKEAVCELEB_SPLIT_SEED, split_by: str = "video",
            run_shards: Optional[ShardRunner] = None, input_uri: str = "") -> Dict[str, Any]:
  """Prepares ``dataset`` from ``source`` into ``output`` (a local path or ``gs://`` URI);
  returns (and writes) the manifest.

  run_shards: writes the shards a previous run did not finish (None: :func:`run_local` on
  ``workers`` processes; ``havic_jax.data.beam.runner(beam_options)``: an Apache Beam
  pipeline, ``workers`` unused). Every runner writes the same shards. input_uri: where the
  videos are read (``gs://BUCKET/DIR`` holding what the directory ``source``, or a CSV
  ``source``'s folder, holds; "": ``source`` itself); the listing, labels and splits still
  come from ``source``."""
  if dataset not in READERS:
    raise ValueError(f"--dataset must be one of {sorted(READERS)}, got {dataset!r}")
  source = storage.local_only(source, "--input")
  entries = (read_fakeavceleb(source, split_seed, split_by) if dataset == "fakeavceleb"
             else READERS[dataset](source))
  out = storage.path(output)
  out.mkdir(parents=True, exist_ok=True)
  groups = split_into_shards(entries, videos_per_shard)
  done = {i: finished_shard(out, i, len(groups), g) for i, g in enumerate(groups)}
  root = source if os.path.isdir(source) else os.path.dirname(source)  # a CSV's folder
  pending = {i: (rebased(g, root, input_uri) if input_uri else g)
             for i, g in enumerate(groups) if not done[i]}
  if len(pending) < len(groups):
    logging.info("resuming: %d of %d shards already written", len(groups) - len(pending),
                 len(groups))
  if pending:
    (run_shards or functools.partial(run_local, workers=workers))(out, len(groups), pending,
                                                                  options)
  for i, group in pending.items():
    done[i] = finished_shard(out, i, len(groups), group)
    if done[i] is None:
      raise RuntimeError(f"{out / records.shard_name(i, len(groups))}: the shard runner "
                         f"finished without writing this shard; re-run the command to resume")
  manifest = build_manifest(dataset, source, options, entries,
                            [done[i] for i in range(len(groups))])
  write_manifest(out, manifest)
  return manifest
