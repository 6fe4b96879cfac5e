"""The prepared-data format: a directory of ArrayRecord shards of clip records and the
``manifest.json`` that describes them (written by ``havic_jax.data.prepare``).

A record is one 3.2 s clip (spec §1), framed by ``havic_jax.data.record_codec``: ``MAGIC``, a
little-endian uint32 header length, a UTF-8 JSON header (with the codec's format version) and
the payload. The header carries the labels and provenance and says where each array lies in the
payload; frames are 16 JPEG images or one raw uint8 block, the audio is int16 at 16 kHz.

The directory holds the shards ``clips-IIIII-of-NNNNN.array_record`` (:func:`shard_name`), a
``.json`` description beside each, ``manifest.json`` (the shards in order, the rejected videos
with their reasons, counts, the split names) and the video index ``videos.npy``
(``havic_jax.data.video_index``: every prepared video's record range, labels, category,
identity, method and splits). :func:`open_prepared` reads them (:class:`PreparedData`);
manifests that list their videos in the JSON, written before the index, still load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import cv2
import grain
import numpy as np

from havic_jax.errors import UserError
from havic_jax import storage
from havic_jax.data import record_codec, video_index

FORMAT_VERSION = 1
MAGIC = b"HAVC"
FRAME_ENCODINGS = ("jpeg", "raw")
JPEG_QUALITY = 95  # stored face crops
LABEL_KEYS = ("audio_label", "visual_label", "overall_label")  # 1 = fake
MANIFEST = "manifest.json"
SHARD_PREFIX = "clips"


class RecordError(ValueError):
  """A record that cannot be decoded (wrong magic, version or sizes)."""


@dataclasses.dataclass(frozen=True)
class ClipRecord:
  """One stored clip.

  frames: uint8 [16, 224, 224, 3] RGB face crops; audio: int16 [51200] (3.2 s at 16 kHz);
  audio_label / visual_label / overall_label: 1 = fake, 0 = real; category: the dataset's
  category name (e.g. ``RVFA``, ``real``); identity: speaker or subject id ("" when the dataset
  has none); video_id: the source video's id (its path relative to the dataset root);
  clip_start: seconds from the start of the video.
  """

  frames: np.ndarray
  audio: np.ndarray
  audio_label: int
  visual_label: int
  overall_label: int
  category: str
  identity: str
  video_id: str
  clip_start: float

  def metadata(self) -> Dict[str, Any]:
    """The scalar fields as a JSON-able dict."""
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
            if field.name not in ("frames", "audio")}


def _encode_frames(frames: np.ndarray, encoding: str) -> List[bytes]:
  if encoding == "raw":
    return [np.ascontiguousarray(frames, np.uint8).tobytes()]
  if encoding != "jpeg":
    raise ValueError(f"frame encoding must be one of {FRAME_ENCODINGS}, got {encoding!r}")
  params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
  chunks = []
  for frame in frames:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
    if not ok:
      raise RecordError("JPEG encoding failed")
    chunks.append(data.tobytes())
  return chunks


def encode(record: ClipRecord, frame_encoding: str = "jpeg") -> bytes:
  """Serialises a clip; ``frame_encoding`` is "jpeg" (quality 95) or "raw" (uint8)."""
  frames = np.asarray(record.frames)
  audio = np.asarray(record.audio)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if audio.dtype != np.int16 or audio.ndim != 1:
    raise ValueError(f"audio must be int16 [S], got {audio.dtype} {audio.shape}")
  chunks = _encode_frames(frames, frame_encoding)
  header = dict(record.metadata(), frame_encoding=frame_encoding,
                frame_shape=list(frames.shape), frame_sizes=[len(c) for c in chunks],
                audio_samples=int(audio.shape[0]))
  return record_codec.encode(MAGIC, header, [*chunks, audio.astype("<i2").tobytes()])


def decode_header(data: bytes) -> Tuple[Dict[str, Any], int]:
  """(header dict, payload offset) of a serialised record."""
  return record_codec.decode(data, MAGIC, what="clip record", remedy="prepare the data again",
                             error=RecordError)


def _decode_frames(data: bytes, offset: int, header: Dict[str, Any]) -> np.ndarray:
  shape = tuple(header["frame_shape"])
  frames = np.empty(shape, np.uint8)
  if header["frame_encoding"] == "raw":
    frames[...] = np.frombuffer(data, np.uint8, int(np.prod(shape)), offset).reshape(shape)
    return frames
  for index, size in enumerate(header["frame_sizes"]):
    image = cv2.imdecode(np.frombuffer(data, np.uint8, size, offset), cv2.IMREAD_COLOR)
    if image is None or image.shape != shape[1:]:
      raise RecordError(f"frame {index} does not decode to {shape[1:]}")
    cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=frames[index])
    offset += size
  return frames


def decode(data: bytes) -> ClipRecord:
  """The inverse of :func:`encode` (JPEG frames come back as decoded pixels)."""
  header, offset = decode_header(data)
  frames = _decode_frames(data, offset, header)
  offset += sum(header["frame_sizes"])
  audio = np.frombuffer(data, "<i2", header["audio_samples"], offset).astype(np.int16)
  fields = {field.name: header[field.name] for field in dataclasses.fields(ClipRecord)
            if field.name not in ("frames", "audio")}
  return ClipRecord(frames=frames, audio=audio, **fields)


def shard_name(index: int, count: int) -> str:
  """The file name of shard ``index`` of ``count``."""
  return f"{SHARD_PREFIX}-{index:05d}-of-{count:05d}.array_record"


class DataError(UserError):
  """Prepared data that is missing or does not fit the request."""


class Manifest(Mapping):
  """``manifest.json`` as a mapping; with a video index, its ``"videos"`` (the video dicts)
  and ``"splits"`` (split -> video ids) are built from the index when first asked for."""

  def __init__(self, summary: Mapping[str, Any], index: np.ndarray, split_names: List[str]):
    self._summary, self._index, self._split_names = dict(summary), index, split_names
    self._derived: Dict[str, Any] = {}

  def _value(self, key: str) -> Any:
    if key in self._summary:
      return self._summary[key]
    if key not in self._derived:
      self._derived[key] = (video_index.video_dicts(self._index) if key == "videos" else
                            video_index.split_lists(self._index, self._split_names))
    return self._derived[key]

  def __getitem__(self, key: str) -> Any:
    if key not in self._summary and key not in ("videos", "splits"):
      raise KeyError(key)
    return self._value(key)

  def __iter__(self):
    return iter(list(self._summary) + [k for k in ("videos", "splits")
                                       if k not in self._summary])

  def __len__(self) -> int:
    return len(list(iter(self)))


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A directory written by ``data_pipelines.prepare``: its manifest, its video index
  (``video_index``: one row per prepared video) and shard paths."""

  directory: pathlib.Path
  manifest: Mapping[str, Any]
  index: np.ndarray
  split_names: Tuple[str, ...]
  sha256: str = ""  # of the manifest file's bytes

  @property
  def shard_paths(self) -> list[str]:
    return [str(self.directory / shard["file"]) for shard in self.manifest["shards"]]

  @property
  def num_records(self) -> int:
    return int(sum(shard["records"] for shard in self.manifest["shards"]))

  def source(self) -> grain.sources.ArrayRecordDataSource:
    """Random access to the serialised records, indexed across shards in manifest order."""
    return grain.sources.ArrayRecordDataSource(self.shard_paths)

  def video_records(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(record indices, the index row of each) of the videos ``rows`` (bool or int)."""
    first = np.asarray(self.index["first_record"])[rows]
    clips = np.asarray(self.index["clips"])[rows].astype(np.int64)
    row_of = np.repeat(np.arange(len(self.index))[rows], clips)
    starts = np.repeat(first - (np.cumsum(clips) - clips), clips)
    return starts + np.arange(int(clips.sum())), row_of

  def split_indices(self, split: Optional[str]) -> np.ndarray:
    """Record indices (int64, ascending) of the clips of ``split``'s videos (None: all)."""
    rows = np.ones(len(self.index), bool)
    if split is not None:
      if split not in self.split_names:
        raise DataError(f"{self.directory / MANIFEST}: no split {split!r}; it has "
                        f"{sorted(self.split_names)}")
      rows = video_index.in_split(self.index, self.split_names, split)
    indices = np.sort(self.video_records(rows)[0])
    if not len(indices):
      raise DataError(f"{self.directory / MANIFEST}: split {split!r} has no prepared clips")
    return indices

  def _per_record(self, column: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
    """[num_records]: each record's value of the per-video ``column``."""
    values = np.full(self.num_records, fill, dtype)
    indices, rows = self.video_records(np.ones(len(self.index), bool))
    values[indices] = column[rows]
    return values

  def record_labels(self, key: str = "overall_label") -> np.ndarray:
    """int8 [num_records]: ``key`` of every record, from the video index."""
    return self._per_record(np.asarray(self.index[key]), 0, np.int8)

  def record_identity_codes(self) -> Tuple[List[str], np.ndarray]:
    """(identities in sorted order, int32 [num_records]: each record's position in them)."""
    names, codes = np.unique(np.asarray(self.index["identity"]), return_inverse=True)
    return ([n.decode() for n in names.tolist()],
            self._per_record(codes.astype(np.int32), 0, np.int32))

  def record_identities(self) -> np.ndarray:
    """object [num_records]: the identity (speaker / subject id) of every record's video."""
    names, codes = self.record_identity_codes()
    return np.asarray(names, object)[codes]

  def identity_vocabulary(self, indices: np.ndarray) -> Dict[str, int]:
    """{identity: id} over the records ``indices``, ids 0.. in sorted identity order."""
    all_names, codes = self.record_identity_codes()
    names = [all_names[c] for c in np.unique(codes[indices])]
    if not names or names == [""]:
      raise DataError(f"{self.directory / MANIFEST}: the records carry no identities; this "
                      f"detector needs a dataset with speaker / subject ids")
    return {name: index for index, name in enumerate(names)}

  def video_splits(self) -> Dict[str, Tuple[str, ...]]:
    """{video id: the splits that hold it} over the manifest's splits."""
    member: Dict[str, List[str]] = {}
    for split, ids in self.manifest["splits"].items():
      for video_id in ids:
        member.setdefault(video_id, []).append(split)
    return {video_id: tuple(splits) for video_id, splits in member.items()}

  def real_indices(self, indices: np.ndarray) -> np.ndarray:
    """The records of ``indices`` whose video is real (``overall_label`` 0)."""
    real = indices[self.record_labels()[indices] == 0]
    if not len(real):
      raise DataError(f"{self.directory / MANIFEST}: the requested split has no real clips")
    return real


def open_prepared(directory: str) -> PreparedData:
  """Reads ``directory/manifest.json`` (a local path: ArrayRecord reads files); errors say how
  to make one."""
  path = pathlib.Path(storage.local_only(directory, "prepared data"))
  manifest_path = path / MANIFEST
  if not manifest_path.is_file():
    raise DataError(f"{manifest_path}: missing; prepare the data first with "
                    f"`python -m data_pipelines.prepare --dataset=... --input=... "
                    f"--output={directory}`")
  content = manifest_path.read_bytes()
  summary = json.loads(content)
  if summary.get("format_version") != FORMAT_VERSION:
    raise DataError(f"{manifest_path}: format version {summary.get('format_version')}, this "
                    f"havic_jax reads {FORMAT_VERSION}; prepare the data again")
  if "video_index" in summary:
    index_path = path / summary["video_index"]
    if not index_path.is_file():
      raise DataError(f"{index_path}: missing (named by {manifest_path}); re-run the "
                      f"preparation command to write it")
    index, names = video_index.read(str(index_path)), list(summary["split_names"])
  else:  # a manifest that lists its videos itself
    index, names = video_index.from_manifest(summary)
  data = PreparedData(path, Manifest(summary, index, names), index, tuple(names),
                      hashlib.sha256(content).hexdigest())
  missing = [p for p in data.shard_paths if not pathlib.Path(p).is_file()]
  if missing:
    raise DataError(f"{directory}: shard(s) listed in {MANIFEST} are missing: {missing[:3]}; "
                    f"re-run the preparation command to finish them")
  return data
