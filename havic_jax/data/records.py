"""The prepared-data format: a directory of ArrayRecord shards of clip records and the
``manifest.json`` that describes them (written by ``havic_jax.data.prepare``).

A record is one 3.2 s clip (spec §1): ``MAGIC``, a little-endian uint32 header length, a UTF-8
JSON header and the payload. The header carries the labels and provenance and says where each
array lies in the payload; frames are 16 JPEG images or one raw uint8 block, the audio is int16
at 16 kHz.

The directory holds the shards ``clips-IIIII-of-NNNNN.array_record`` (:func:`shard_name`), a
``.json`` description beside each, and ``manifest.json``: the shards in order, every prepared
video's record range, labels, category, identity and method, the splits (video ids), the
rejected videos with their reasons, and counts. :func:`open_prepared` reads it
(:class:`PreparedData`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

import cv2
import grain
import numpy as np

from havic_jax.errors import UserError
from havic_jax import storage

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
  header = dict(record.metadata(), version=FORMAT_VERSION, frame_encoding=frame_encoding,
                frame_shape=list(frames.shape), frame_sizes=[len(c) for c in chunks],
                audio_samples=int(audio.shape[0]))
  header_bytes = json.dumps(header, separators=(",", ":")).encode()
  return b"".join([MAGIC, struct.pack("<I", len(header_bytes)), header_bytes, *chunks,
                   audio.astype("<i2").tobytes()])


def decode_header(data: bytes) -> Tuple[Dict[str, Any], int]:
  """(header dict, payload offset) of a serialised record."""
  if data[:4] != MAGIC:
    raise RecordError("not a havic_jax clip record (bad magic)")
  (length,) = struct.unpack_from("<I", data, 4)
  header = json.loads(data[8:8 + length])
  if header.get("version") != FORMAT_VERSION:
    raise RecordError(f"record format version {header.get('version')}; this havic_jax reads "
                      f"version {FORMAT_VERSION}: prepare the data again")
  return header, 8 + length


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


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """A directory written by ``data_pipelines.prepare``: its manifest and shard paths."""

  directory: pathlib.Path
  manifest: Mapping[str, Any]
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

  def split_indices(self, split: Optional[str]) -> np.ndarray:
    """Record indices (int64, ascending) of the clips of ``split``'s videos (None: all)."""
    videos = self.manifest["videos"]
    if split is not None:
      if split not in self.manifest["splits"]:
        raise DataError(f"{self.directory / MANIFEST}: no split {split!r}; it has "
                        f"{sorted(self.manifest['splits'])}")
      wanted = set(self.manifest["splits"][split])
      videos = [v for v in videos if v["video_id"] in wanted]
    if not videos:
      raise DataError(f"{self.directory / MANIFEST}: split {split!r} has no prepared clips")
    return np.sort(np.concatenate([np.arange(v["first_record"], v["first_record"] + v["clips"])
                                   for v in videos]))

  def record_labels(self, key: str = "overall_label") -> np.ndarray:
    """int8 [num_records]: ``key`` of every record, from the manifest's video table."""
    labels = np.zeros(self.num_records, np.int8)
    for video in self.manifest["videos"]:
      labels[video["first_record"]:video["first_record"] + video["clips"]] = video[key]
    return labels

  def record_identities(self) -> np.ndarray:
    """object [num_records]: the identity (speaker / subject id) of every record's video."""
    identities = np.empty(self.num_records, object)
    for video in self.manifest["videos"]:
      identities[video["first_record"]:video["first_record"] + video["clips"]] = video["identity"]
    return identities

  def identity_vocabulary(self, indices: np.ndarray) -> Dict[str, int]:
    """{identity: id} over the records ``indices``, ids 0.. in sorted identity order."""
    names = sorted(set(self.record_identities()[indices]))
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
  manifest = json.loads(content)
  if manifest.get("format_version") != FORMAT_VERSION:
    raise DataError(f"{manifest_path}: format version {manifest.get('format_version')}, this "
                    f"havic_jax reads {FORMAT_VERSION}; prepare the data again")
  data = PreparedData(path, manifest, hashlib.sha256(content).hexdigest())
  missing = [p for p in data.shard_paths if not pathlib.Path(p).is_file()]
  if missing:
    raise DataError(f"{directory}: shard(s) listed in {MANIFEST} are missing: {missing[:3]}; "
                    f"re-run the preparation command to finish them")
  return data
