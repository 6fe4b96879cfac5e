"""The videos the eval binary scores (``--data``): a CSV, a FakeAVCeleb directory, a folder of
unlabelled videos, or prepared shards (each stored clip is one window).

A CSV lists ``video_path,overall_label[,audio_label,visual_label,category,generator]`` (KoDF,
HiFi-AVDF, own lists); a FakeAVCeleb directory holds ``meta_data.csv``; prepared shards are a
``data_pipelines.prepare`` output (``manifest.json``, read by ``havic_jax.data.records``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Iterable, Optional, Tuple

from havic_jax import storage
from havic_jax.data import records, sources


@dataclasses.dataclass(frozen=True)
class EvalVideo:
  """One video to score. label: 1 fake, 0 real, None unknown; category: "real", a fake
  category or "fake"; generator: the manipulation method or generator ("" unknown); records:
  (first record, clips) in prepared data; rejected: why preparation rejected it ("" if not)."""

  video_id: str
  path: str
  label: Optional[int]
  category: str
  generator: str
  splits: Tuple[str, ...]
  records: Optional[Tuple[int, int]] = None
  rejected: str = ""


@dataclasses.dataclass(frozen=True)
class EvalData:
  """The videos of ``--data``: kind "csv", "fakeavceleb" or "prepared"; hash: sha256 over the
  video list (id, label, size) or the manifest."""

  kind: str
  path: str
  videos: Tuple[EvalVideo, ...]
  hash: str
  prepared: Optional[records.PreparedData] = None


def _entry_video(entry: sources.VideoEntry) -> EvalVideo:
  return EvalVideo(entry.video_id, entry.path, entry.overall_label, entry.category,
                   entry.method, entry.splits)


def _sha256(lines: Iterable[str]) -> str:
  digest = hashlib.sha256()
  for line in lines:
    digest.update(line.encode() + b"\n")
  return digest.hexdigest()


def _file_size(path: str) -> int:
  try:
    return pathlib.Path(path).stat().st_size
  except OSError:
    return -1


def load_data(path: str, split_seed: int = sources.FAKEAVCELEB_SPLIT_SEED,
              split_by: str = "video") -> EvalData:
  """The videos of a CSV, a FakeAVCeleb directory or a prepared-shards directory (local paths:
  the decoders read files)."""
  location = pathlib.Path(storage.local_only(path, "--data"))
  if location.is_dir() and (location / records.MANIFEST).is_file():
    prepared = records.open_prepared(path)
    manifest = prepared.manifest
    member = prepared.video_splits()
    source = pathlib.Path(manifest.get("source", ""))
    videos = [EvalVideo(v["video_id"], v.get("path") or str(source / v["video_id"]),
                        v["overall_label"], v["category"], v.get("method", ""),
                        member.get(v["video_id"], ()), (v["first_record"], v["clips"]))
              for v in manifest["videos"]]
    videos += [EvalVideo(r["video_id"], r["path"], None, "", "", (), None,
                         f"{r['reason']}: {r.get('message', '')}")
               for r in manifest["rejected"]]
    return EvalData("prepared", str(location.absolute()), tuple(videos), prepared.sha256,
                    prepared)
  if location.is_file():
    videos, kind = tuple(_entry_video(e) for e in sources.read_csv(path)), "csv"
  elif sources.fakeavceleb_meta(path) is not None:
    videos = tuple(_entry_video(e) for e in sources.read_fakeavceleb(path, split_seed,
                                                                      split_by))
    kind = "fakeavceleb"
  elif location.is_dir():  # any folder of videos, unlabelled: scores and statuses only
    videos = tuple(EvalVideo(p.relative_to(location).as_posix(), str(p), None, "", "", ("all",))
                   for p in sources.videos_under(location))
    kind = "csv"
    if not videos:
      raise sources.DatasetError(f"{path}: no videos ({', '.join(sources.VIDEO_SUFFIXES)}), "
                                  f"meta_data.csv or manifest.json in this directory")
  else:
    raise sources.DatasetError(f"{path}: no such file or directory; --data takes a CSV, a "
                                f"FakeAVCeleb directory, prepared shards or a folder of videos")
  digest = _sha256(f"{v.video_id}\t{v.label}\t{_file_size(v.path)}" for v in videos)
  return EvalData(kind, str(location.absolute()), videos, digest)
