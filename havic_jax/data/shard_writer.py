"""The preparation's shard files: each shard's clip records as one ArrayRecord file with a
``.json`` description beside it (``havic_jax.data.records`` names them), written so that each
appears complete or not at all (``storage.staged``), and recognised as finished when a re-run
finds them (resume).

Both shard runners (``prepare.run_local`` and ``havic_jax.data.beam``) write shards with
:func:`write_shard` from the :class:`VideoOutcome` of each video.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from etils import epath

from havic_jax import storage
from havic_jax.data import records, video_index
from havic_jax.data.sources import VideoEntry


@dataclasses.dataclass(frozen=True)
class VideoOutcome:
  """What ``prepare.process_video`` made of one video: its serialised clip records and the
  number of clips it dropped, or (``rejection`` set, no records) why it yields no clip at all."""

  video_id: str
  records: Tuple[bytes, ...] = ()
  clips_rejected: int = 0
  rejection: Optional[Dict[str, str]] = None


def write_manifest(directory: epath.Path, manifest: Mapping[str, Any]) -> None:
  """Writes ``manifest`` (with its ``"videos"`` and ``"splits"``) into ``directory`` as the
  video index (``video_index.INDEX_FILE``) and the summary ``manifest.json`` that names it,
  each staged and published, the index first: a reader never finds a manifest without its
  index."""
  table, names = video_index.build(manifest["videos"], manifest["splits"])
  with storage.staged(directory / video_index.INDEX_FILE) as staging:
    video_index.write(staging, table)
  summary = {k: v for k, v in manifest.items() if k not in ("videos", "splits")}
  summary.update(video_index=video_index.INDEX_FILE, split_names=names)
  with storage.staged(directory / records.MANIFEST) as staging:
    staging.write_text(json.dumps(summary, indent=1))


def write_array_record(path: epath.Path, data: Iterable[bytes]) -> None:
  """Writes ``data`` as an ArrayRecord file at the local ``path`` (the writer needs a local
  file): pass the path ``storage.staged`` gives, which publishes the file whole, locally or on
  a bucket."""
  from array_record.python.array_record_module import ArrayRecordWriter
  writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
  try:
    for item in data:
      writer.write(item)
  finally:
    writer.close()


def write_shard(output: storage.PathLike, index: int, count: int,
                outcomes: Iterable[VideoOutcome]) -> Dict[str, Any]:
  """Writes the records of ``outcomes`` (the shard's videos, in order; an iterator is
  consumed as it is written) as shard ``index`` of ``count`` and its ``.json`` description;
  returns the description."""
  path = storage.path(output) / records.shard_name(index, count)
  videos, rejected, clip_rejections = [], [], 0
  num_records = 0

  def shard_records() -> Iterator[bytes]:
    nonlocal num_records, clip_rejections
    for outcome in outcomes:
      if outcome.rejection is not None:
        rejected.append(outcome.rejection)
        continue
      yield from outcome.records
      videos.append({"video_id": outcome.video_id, "first_record": num_records,
                     "clips": len(outcome.records), "clips_rejected": outcome.clips_rejected})
      num_records += len(outcome.records)
      clip_rejections += outcome.clips_rejected

  with storage.staged(path) as staging:
    write_array_record(staging, shard_records())
  description = {"file": path.name, "records": num_records, "videos": videos,
                 "rejected": rejected, "clips_rejected": clip_rejections}
  with storage.staged(path.with_suffix(".json")) as staging:
    staging.write_text(json.dumps(description))
  return description


def finished_shard(output: epath.Path, index: int, count: int,
                   entries: Sequence[VideoEntry]) -> Optional[Dict[str, Any]]:
  """The description of a shard a previous run completed for the same videos, else None."""
  sidecar = (output / records.shard_name(index, count)).with_suffix(".json")
  if not sidecar.is_file() or not (output / records.shard_name(index, count)).is_file():
    return None
  description = json.loads(sidecar.read_text())
  done = [v["video_id"] for v in description["videos"]] + [
      r["video_id"] for r in description["rejected"]]
  return description if sorted(done) == sorted(e.video_id for e in entries) else None
