"""The clip record stored in ArrayRecord shards: one record = one 3.2 s clip (spec §1).

A record is ``MAGIC``, a little-endian uint32 header length, a UTF-8 JSON header and the
payload. The header carries the labels and provenance and says where each array lies in the
payload; frames are 16 JPEG images or one raw uint8 block, the audio is int16 at 16 kHz.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

FORMAT_VERSION = 1
MAGIC = b"HAVC"
FRAME_ENCODINGS = ("jpeg", "raw")
JPEG_QUALITY = 95  # stored face crops
LABEL_KEYS = ("audio_label", "visual_label", "overall_label")  # 1 = fake


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
