"""Raw videos -> ArrayRecord shards of 3.2 s clips and a manifest.json.

  python -m data_pipelines.prepare --dataset=fakeavceleb --input=DIR --output=DIR [--workers=N]

Each video is decoded, cut into clips, face-cropped and written as clip records
(``havic_jax.records``). Videos go to shards in a fixed order, ``--videos_per_shard`` each; a
shard is written to a temporary file, renamed when complete and described by a ``.json`` file
beside it, so re-running the command skips the finished shards (resume). A video that cannot be
used (corrupt, not a video, no audio, no face, too short) is listed in the manifest with its
reason; the run goes on and exits 0.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import pathlib
import queue
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence

import tqdm
from absl import app, flags, logging

from havic_jax import cli, records
from havic_jax.datasets import READERS, VideoEntry, read_fakeavceleb
from havic_jax.media.clips import extract_clips
from havic_jax.media.decode import CLIP_SECONDS, MediaError, read_media
from havic_jax.media.faces import Detector, centre_detector, mtcnn_detector

FLAGS = flags.FLAGS
MANIFEST = "manifest.json"
SHARD_PREFIX = "clips"
# Why a video yields no clip; the manifest counts videos per reason.
REJECT_REASONS = ("unreadable", "no_audio", "too_short", "no_face", "error")


def shard_name(index: int, count: int) -> str:
  return f"{SHARD_PREFIX}-{index:05d}-of-{count:05d}.array_record"


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
  frame's centre square, for out-of-domain clips without faces)."""

  frame_encoding: str = "jpeg"
  clip_hop: Optional[float] = None
  max_clips: Optional[int] = None
  crop: str = "face"

  def __post_init__(self):
    if self.crop not in CROPS:
      raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")


def video_records(entry: VideoEntry, detect: Detector, options: PrepareOptions
                  ) -> tuple[List[bytes], List[str]]:
  """(serialised clip records, reasons of rejected clips) of one video.

  Raises :class:`VideoRejected` when the video yields no clip at all."""
  try:
    media = read_media(entry.path)
  except MediaError as error:
    raise VideoRejected("unreadable", str(error)) from error
  if media.audio is None:
    raise VideoRejected("no_audio", f"{entry.path}: no audio track")
  clips, rejected = extract_clips(media, detect, hop_seconds=options.clip_hop,
                                  max_clips=options.max_clips)
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
  """Per-process state: the progress queue (the detector is loaded on first use)."""
  _WORKER["progress"] = progress


def _detector(crop: str) -> Detector:
  """This process's detector for ``crop`` (MTCNN loaded once per process)."""
  if crop not in _WORKER:
    _WORKER[crop] = mtcnn_detector() if crop == "face" else centre_detector()
  return _WORKER[crop]


def write_shard(output: str, index: int, count: int, entries: Sequence[VideoEntry],
                options: PrepareOptions) -> Dict[str, Any]:
  """Writes one shard and its ``.json`` description; returns the description."""
  from array_record.python.array_record_module import ArrayRecordWriter
  path = pathlib.Path(output) / shard_name(index, count)
  partial = path.with_name(path.name + ".partial")
  writer = ArrayRecordWriter(str(partial), "group_size:1")
  videos, rejected, clip_rejections, num_records = [], [], 0, 0
  try:
    for entry in entries:
      try:
        encoded, dropped = video_records(entry, _detector(options.crop), options)
      except VideoRejected as error:
        rejected.append({"video_id": entry.video_id, "path": entry.path, "reason": error.code,
                         "message": str(error)})
        logging.warning("skipping %s: %s", entry.video_id, error)
      except Exception as error:  # pylint: disable=broad-except
        # One bad file must never stop a long preparation run: record it and go on.
        rejected.append({"video_id": entry.video_id, "path": entry.path, "reason": "error",
                         "message": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc(limit=5)})
        logging.error("failed on %s: %s", entry.video_id, error)
      else:
        for data in encoded:
          writer.write(data)
        videos.append({"video_id": entry.video_id, "first_record": num_records,
                       "clips": len(encoded), "clips_rejected": len(dropped)})
        num_records += len(encoded)
        clip_rejections += len(dropped)
      if _WORKER.get("progress") is not None:
        _WORKER["progress"].put(1)
  finally:
    writer.close()
  os.replace(partial, path)
  description = {"file": path.name, "records": num_records, "videos": videos,
                 "rejected": rejected, "clips_rejected": clip_rejections}
  sidecar = path.with_suffix(".json")
  sidecar.with_name(sidecar.name + ".partial").write_text(json.dumps(description))
  os.replace(sidecar.with_name(sidecar.name + ".partial"), sidecar)
  return description


def _shard_task(args) -> Dict[str, Any]:
  return write_shard(*args)


def split_into_shards(entries: Sequence[VideoEntry], videos_per_shard: int
                      ) -> List[List[VideoEntry]]:
  return [list(entries[i:i + videos_per_shard])
          for i in range(0, len(entries), videos_per_shard)]


def finished_shard(output: pathlib.Path, index: int, count: int,
                   entries: Sequence[VideoEntry]) -> Optional[Dict[str, Any]]:
  """The description of a shard a previous run completed for the same videos, else None."""
  sidecar = (output / shard_name(index, count)).with_suffix(".json")
  if not sidecar.is_file() or not (output / shard_name(index, count)).is_file():
    return None
  description = json.loads(sidecar.read_text())
  done = [v["video_id"] for v in description["videos"]] + [
      r["video_id"] for r in description["rejected"]]
  return description if sorted(done) == sorted(e.video_id for e in entries) else None


def _run_pool(tasks: List[tuple], workers: int, total_videos: int) -> List[Dict[str, Any]]:
  """Runs shard tasks on ``workers`` processes with a per-video progress bar."""
  bar = tqdm.tqdm(total=total_videos, desc="videos", unit="video", smoothing=0.05)
  if workers <= 1:
    _init_worker(None)
    results = []
    for task in tasks:
      results.append(_shard_task(task))
      bar.update(len(task[3]))
    bar.close()
    return results
  context = multiprocessing.get_context("spawn")
  progress = context.Manager().Queue()
  with context.Pool(workers, initializer=_init_worker, initargs=(progress,)) as pool:
    pending = [pool.apply_async(_shard_task, (task,)) for task in tasks]
    while not all(p.ready() for p in pending):
      try:
        bar.update(progress.get(timeout=0.5))
      except queue.Empty:
        pass
    results = [p.get() for p in pending]  # re-raises a worker's crash
  bar.update(total_videos - bar.n)
  bar.close()
  return results


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


def prepare(dataset: str, source: str, output: str, workers: int = 1,
            videos_per_shard: int = 64, options: PrepareOptions = PrepareOptions(),
            split_seed: int = 0, split_by: str = "video") -> Dict[str, Any]:
  """Prepares ``dataset`` from ``source`` into ``output``; returns (and writes) the manifest."""
  if dataset not in READERS:
    raise ValueError(f"--dataset must be one of {sorted(READERS)}, got {dataset!r}")
  entries = (read_fakeavceleb(source, split_seed, split_by) if dataset == "fakeavceleb"
             else READERS[dataset](source))
  out = pathlib.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  groups = split_into_shards(entries, videos_per_shard)
  done = {i: finished_shard(out, i, len(groups), g) for i, g in enumerate(groups)}
  tasks = [(str(out), i, len(groups), g, options) for i, g in enumerate(groups) if not done[i]]
  if len(tasks) < len(groups):
    logging.info("resuming: %d of %d shards already written", len(groups) - len(tasks),
                 len(groups))
  for result in _run_pool(tasks, workers, sum(len(t[3]) for t in tasks)):
    done[int(result["file"].split("-")[1])] = result
  manifest = build_manifest(dataset, source, options, entries,
                            [done[i] for i in range(len(groups))])
  partial = out / (MANIFEST + ".partial")
  partial.write_text(json.dumps(manifest, indent=1))
  os.replace(partial, out / MANIFEST)
  return manifest


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  started = time.time()
  options = PrepareOptions(FLAGS.frame_encoding, FLAGS.clip_hop, FLAGS.max_clips_per_video,
                           FLAGS.crop)
  manifest = prepare(FLAGS.dataset, FLAGS.input, FLAGS.output, FLAGS.workers,
                     FLAGS.videos_per_shard, options, FLAGS.split_seed, FLAGS.split_by)
  counts = manifest["counts"]
  elapsed = time.time() - started
  reasons = ", ".join(f"{n} {code}" for code, n in counts["rejected_by_reason"].items() if n)
  print(f"{counts['clips']} clips from {counts['videos_prepared']} of {counts['videos']} videos "
        f"in {len(manifest['shards'])} shards -> {FLAGS.output} ({elapsed:.1f} s)")
  if counts["videos_rejected"]:
    print(f"{counts['videos_rejected']} videos rejected ({reasons}); see 'rejected' in "
          f"{pathlib.Path(FLAGS.output) / MANIFEST}")


def define_flags() -> None:
  flags.DEFINE_enum("dataset", None, sorted(READERS), "Layout of --input (spec §14).")
  flags.DEFINE_string("input", None, "Dataset directory, or the CSV for --dataset=csv.")
  flags.DEFINE_string("output", None, "Directory for the shards and manifest.json.")
  flags.DEFINE_integer("workers", max(1, (os.cpu_count() or 1)),
                       "Processes decoding videos (1: in this process).", lower_bound=1)
  flags.DEFINE_integer("videos_per_shard", 64, "Videos per ArrayRecord shard.", lower_bound=1)
  flags.DEFINE_enum("frame_encoding", "jpeg", list(records.FRAME_ENCODINGS),
                    "How face crops are stored: JPEG (quality 95) or raw uint8.")
  flags.DEFINE_float("clip_hop", None, "Seconds between clip starts (default: back to back).")
  flags.DEFINE_integer("max_clips_per_video", None, "Keep at most this many clips per video.")
  flags.DEFINE_enum("crop", "face", list(CROPS),
                    "face: MTCNN face crops (videos without faces are rejected); centre: each "
                    "frame's centre square, for out-of-domain clips without faces (e.g. "
                    "--dataset=folder of AudioSet-style videos, mixed into pretraining with "
                    "--config.data.mixture).")
  flags.DEFINE_integer("split_seed", 0, "Seed of FakeAVCeleb's 70/30 split.")
  flags.DEFINE_enum("split_by", "video", ["video", "identity"],
                    "FakeAVCeleb's 70/30 split draws videos (paper) or source identities.")
  flags.mark_flags_as_required(["dataset", "input", "output"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
