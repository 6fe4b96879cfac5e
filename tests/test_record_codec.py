"""The record framing shared by clip records (``data.records``) and window records
(``evaluation.window_shards``): records written before the shared codec decode (goldens laid
out by hand), a header without a version reads as version 1, and a future version, another
magic or a cut record are one-line errors."""

import json
import struct

import numpy as np
import pytest

from havic_jax.data import record_codec, records
from havic_jax.evaluation import window_shards
from havic_jax.evaluation.inputs import WindowInputs

RNG = np.random.default_rng(7)
FRAMES = RNG.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
AUDIO = RNG.integers(-32768, 32767, 40, dtype=np.int16)
CLIP_FIELDS = {"audio_label": 1, "visual_label": 0, "overall_label": 1, "category": "RVFA",
               "identity": "id01", "video_id": "a/b.mp4", "clip_start": 3.2}
WINDOW_VIDEO = RNG.integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
WINDOW_AUDIO = RNG.standard_normal((2, 5, 8)).astype(np.float32)


def framed(magic, header, *payload):
  """A record laid out as havic_jax wrote them before the shared codec: magic, uint32 LE
  header length, compact JSON header, payload."""
  header_bytes = json.dumps(header, separators=(",", ":")).encode()
  return magic + struct.pack("<I", len(header_bytes)) + header_bytes + b"".join(payload)


def old_clip_record(**changes):
  header = dict(CLIP_FIELDS, version=1, frame_encoding="raw", frame_shape=list(FRAMES.shape),
                frame_sizes=[FRAMES.nbytes], audio_samples=len(AUDIO))
  header.update(changes)
  header = {k: v for k, v in header.items() if v is not None}
  return framed(b"HAVC", header, FRAMES.tobytes(), AUDIO.astype("<i2").tobytes())


def old_window_record(**changes):
  header = {"version": 1, "video_id": "v1", "condition": "crf23_44k", "status": "ok",
            "detail": "", "head": "overall", "video_shape": list(WINDOW_VIDEO.shape),
            "audio_shape": list(WINDOW_AUDIO.shape), "starts": [0.0, 0.4], "tracks": None}
  header.update(changes)
  header = {k: v for k, v in header.items() if v is not None or k == "tracks"}
  return framed(b"HAVW", header, WINDOW_VIDEO.tobytes(), WINDOW_AUDIO.astype("<f4").tobytes())


def test_clip_records_written_before_the_shared_codec_decode():
  for data in (old_clip_record(), old_clip_record(version=None)):  # version 1, or none at all
    record = records.decode(data)
    np.testing.assert_array_equal(record.frames, FRAMES)
    np.testing.assert_array_equal(record.audio, AUDIO)
    assert record.metadata() == CLIP_FIELDS
  new = records.encode(records.ClipRecord(FRAMES, AUDIO, **CLIP_FIELDS), "raw")
  header, offset = records.decode_header(new)
  assert header["version"] == record_codec.FORMAT_VERSION
  assert new[offset:] == FRAMES.tobytes() + AUDIO.astype("<i2").tobytes()  # the same payload


def test_window_records_written_before_the_shared_codec_decode():
  for data in (old_window_record(), old_window_record(version=None)):
    video_id, condition, windows = window_shards.decode(data)
    assert (video_id, condition, windows.status, windows.head) == ("v1", "crf23_44k", "ok",
                                                                   "overall")
    np.testing.assert_array_equal(windows.video, WINDOW_VIDEO)
    np.testing.assert_array_equal(windows.audio, WINDOW_AUDIO)
    np.testing.assert_array_equal(windows.starts, [0.0, 0.4])
    assert windows.tracks is None
  task = window_shards.Task("v1", "/videos/v1.mp4", "crf23_44k")
  inputs = WindowInputs("ok", "", WINDOW_VIDEO, WINDOW_AUDIO, np.array([0.0, 0.4]))
  assert window_shards.encode(task, inputs) == old_window_record()  # byte for byte


@pytest.mark.parametrize("decode, data, error", [
    (records.decode, old_clip_record(version=7), records.RecordError),
    (window_shards.decode, old_window_record(version=7), window_shards.WindowShardError),
])
def test_a_future_format_version_is_a_one_line_error_naming_it(decode, data, error):
  with pytest.raises(error, match="format version 7; this havic_jax reads version 1") as info:
    decode(data)
  assert "\n" not in str(info.value)


def test_the_codec_checks_magic_and_sizes_and_keeps_its_version_key():
  data = record_codec.encode(b"TEST", {"n": 1}, [b"abc", b"de"])
  header, offset = record_codec.decode(data, b"TEST")
  assert header == {"version": record_codec.FORMAT_VERSION, "n": 1} and data[offset:] == b"abcde"
  with pytest.raises(record_codec.FormatError, match="bad magic"):
    record_codec.decode(data, b"HAVC")
  with pytest.raises(record_codec.FormatError, match="truncated"):
    record_codec.decode(data[:offset - 1], b"TEST")
  with pytest.raises(records.RecordError, match="bad magic"):
    records.decode(old_window_record())  # a window record is not a clip record
  with pytest.raises(ValueError, match="version"):
    record_codec.encode(b"TEST", {"version": 2}, [])
