"""The per-video index of a prepared directory: one row per prepared video in a NumPy
structured array, ``videos.npy`` beside ``manifest.json``.

At VoxCeleb2 scale (1.09 M videos) the manifest's JSON list of videos is about 360 MB, and
every training host parsing it into Python dicts peaked at 1.9 GB; the index is read as a
memory map, so a host touches only the columns it uses (record ranges, labels, identities,
splits) and nothing is parsed. ``manifest.json`` keeps the summary (shards, counts, options,
rejected videos) and names the index (``"video_index"``) and its split names
(``"split_names"``); manifests without an index (written before it) carry ``"videos"`` and
``"splits"`` in the JSON and still load (:func:`from_manifest`).

Columns: the manifest's video fields (``VIDEO_FIELDS``); strings as UTF-8 bytes of the
longest value's width; ``splits`` a bit mask over ``split_names`` (bit k: split k holds the
video).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

INDEX_FILE = "videos.npy"
# (field, dtype or "str") of each column, in the manifest's video order of keys.
VIDEO_FIELDS = (("video_id", "str"), ("path", "str"), ("shard", np.int32),
                ("first_record", np.int64), ("clips", np.int32), ("clips_rejected", np.int32),
                ("audio_label", np.int8), ("visual_label", np.int8), ("overall_label", np.int8),
                ("category", "str"), ("identity", "str"), ("method", "str"))
MAX_SPLITS = 64  # bits of the ``splits`` column


def build(videos: Sequence[Mapping[str, Any]], splits: Mapping[str, Sequence[str]]
          ) -> Tuple[np.ndarray, List[str]]:
  """(structured array [num_videos], split names) of manifest video dicts and the splits
  (split name -> video ids)."""
  names = sorted(splits)
  if len(names) > MAX_SPLITS:
    raise ValueError(f"{len(names)} splits; the video index holds at most {MAX_SPLITS}")
  dtype = []
  for field, kind in VIDEO_FIELDS:  # a field a video lacks: "" or 0
    if kind == "str":
      width = max([len(str(v.get(field, "")).encode()) for v in videos] + [1])
      dtype.append((field, f"S{width}"))
    else:
      dtype.append((field, kind))
  dtype.append(("splits", np.uint64))
  table = np.zeros(len(videos), dtype)
  for field, kind in VIDEO_FIELDS:
    if kind == "str":
      table[field] = [str(v.get(field, "")).encode() for v in videos]
    else:
      table[field] = [v.get(field, 0) for v in videos]
  row = {v["video_id"]: i for i, v in enumerate(videos)}
  for bit, name in enumerate(names):
    members = [row[video_id] for video_id in splits[name] if video_id in row]
    table["splits"][members] |= np.uint64(1 << bit)
  return table, names


def from_manifest(manifest: Mapping[str, Any]) -> Tuple[np.ndarray, List[str]]:
  """The index of a manifest that lists its videos in the JSON (written before the index)."""
  return build(manifest["videos"], manifest["splits"])


def write(path: Any, table: np.ndarray) -> None:
  """``table`` as a ``.npy`` file at ``path`` (an ``epath.Path``: local or ``gs://``)."""
  with path.open("wb") as file:
    np.save(file, table, allow_pickle=False)


def read(path: str) -> np.ndarray:
  """The index at the local ``path``, memory-mapped read-only."""
  return np.load(path, mmap_mode="r", allow_pickle=False)


def in_split(table: np.ndarray, names: Sequence[str], split: str) -> np.ndarray:
  """bool [num_videos]: the videos that ``split`` (one of ``names``) holds."""
  bit = np.uint64(list(names).index(split))
  return ((np.asarray(table["splits"]) >> bit) & np.uint64(1)) == 1


def video_dicts(table: np.ndarray) -> List[Dict[str, Any]]:
  """The manifest's video dicts of ``table`` (for readers of whole video lists: eval)."""
  columns = {field: (np.char.decode(np.asarray(table[field]), "utf-8").tolist()
                     if kind == "str" else np.asarray(table[field]).tolist())
             for field, kind in VIDEO_FIELDS}
  return [dict(zip(columns, values)) for values in zip(*columns.values())]


def split_lists(table: np.ndarray, names: Sequence[str]) -> Dict[str, List[str]]:
  """{split: video ids, in index order} of ``table``."""
  ids = np.char.decode(np.asarray(table["video_id"]), "utf-8")
  return {name: ids[in_split(table, names, name)].tolist() for name in names}
