"""Clip cutting: start times, frame choice per clip, audio alignment, rejections."""

import numpy as np
import pytest

from havic_jax.media.clips import clip_starts, extract_clips, to_int16
from havic_jax.media.decode import Media


def test_clip_starts():
  assert clip_starts(10.0) == [0.0, 3.2, 6.4]
  assert clip_starts(3.2) == [0.0]
  assert clip_starts(3.1) == []
  assert clip_starts(4.0, hop_seconds=0.4) == [0.0, 0.4, 0.8]  # 0.8 + 3.2 = 4.0 fits


def face_detector(frame):
  return (8.0, 8.0, 24.0, 24.0) if frame[0, 0, 1] == 0 else None


def numbered_media(seconds, fps=25, no_face_from=None):
  """Frames carry their index in the red channel; audio sample k carries k / 16000 s."""
  n = int(seconds * fps)
  frames = np.zeros((n, 32, 32, 3), np.uint8)
  frames[..., 0] = (np.arange(n) % 256)[:, None, None]
  if no_face_from is not None:
    frames[no_face_from:, 0, 0, 1] = 1
  audio = (np.arange(int(seconds * 16000)) / 16000 / seconds).astype(np.float32)
  return Media("numbered.mp4", frames, float(fps), audio, 16000)


def test_frames_and_audio_of_each_clip_line_up():
  clips, rejected = extract_clips(numbered_media(7.0), face_detector)
  assert rejected == [] and [c.start for c in clips] == [0.0, 3.2]
  second = clips[1]
  assert second.frames.shape == (16, 224, 224, 3) and second.audio.shape == (51200,)
  # 3.2 s at 25 fps = frames 80..159; linspace picks 80, 85, ..., 159.
  frame_ids = second.frames[:, 112, 112, 0]
  np.testing.assert_array_equal(frame_ids, 80 + np.linspace(0, 79, 16).astype(int))
  # The audio starts at 3.2 s: sample value 3.2 / 7.0 on the [-1, 1] scale.
  assert second.audio[0] == to_int16(np.array([3.2 / 7.0]))[0]
  assert second.faces_detected == 16


def test_clips_without_faces_are_rejected_with_a_reason():
  clips, rejected = extract_clips(numbered_media(7.0, no_face_from=100), face_detector)
  assert [c.start for c in clips] == [0.0]
  assert len(rejected) == 1 and rejected[0].startswith("clip at 3.2 s: a face in 4 of 16")


def test_audio_less_video_is_an_error_naming_it():
  media = numbered_media(4.0)
  with pytest.raises(ValueError, match="numbered.mp4: no audio track"):
    extract_clips(Media(media.path, media.frames, media.fps, None, 16000), face_detector)
