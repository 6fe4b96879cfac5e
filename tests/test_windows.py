"""Sliding windows: the plan's arithmetic, frames and audio carrying the same timing marks in
every window, statuses (borrowed boxes, centre crops, padding), and zero-mean audio slices."""

import numpy as np
import pytest

from havic_jax.media.decode import Media
from havic_jax.media.windows import (NO_FACE, OK, PARTIAL_FACE, SHORT_PADDED, extract_windows,
                                     plan_windows)

RATE = 16000


def release_ranges(num_frames, fps, num_samples, max_seconds=10.0):
  """The release's audio slices recomputed by counting sampling times one by one."""
  duration = num_frames / fps
  in_video = sum(1 for k in range(10_000) if k / 5 < duration)
  sampled = sum(1 for k in range(10_000) if k / 5 < min(duration, max_seconds))
  windows = 0
  while 2 * windows + 16 <= sampled:
    windows += 1
  used = 2 * (windows - 1) + 16
  total = int(used / in_video * num_samples)
  seg = int(total * 16 / (16 + 2 * (windows - 1)))
  hop = int(seg * 2 / 16)
  return [(i * hop, i * hop + seg) for i in range(windows)]


def test_ten_seconds_give_fifty_frames_and_eighteen_aligned_windows():
  plan = plan_windows(250, 25.0, 160000)
  np.testing.assert_array_equal(plan.frame_indices, 5 * np.arange(50))
  assert plan.num_windows == 18 and not plan.padded
  np.testing.assert_allclose(plan.starts, 0.4 * np.arange(18))
  for i, frames in enumerate(plan.window_frames):
    np.testing.assert_array_equal(frames, np.arange(2 * i, 2 * i + 16))
  aligned = np.round(np.stack([plan.starts, plan.starts + 3.2], 1) * RATE)
  assert np.abs(plan.audio_ranges - aligned).max() <= 2
  assert plan.window_samples == 51200


@pytest.mark.parametrize("num_frames,fps,num_samples", [
    (219, 29.97, 116800),   # 7.3 s: 37 sampling times, the 37th in no window
    (183, 25.0, 117120),    # 7.32 s
    (377, 30.0, 201067),    # 12.57 s: capped at 10 s
    (95, 25.0, 60800),      # 3.8 s: two windows
])
def test_audio_ranges_follow_the_release_formula(num_frames, fps, num_samples):
  plan = plan_windows(num_frames, fps, num_samples)
  assert [tuple(r) for r in plan.audio_ranges] == release_ranges(num_frames, fps, num_samples)
  # Within one sampled frame (0.2 s) of the frame-aligned slices, inside the waveform.
  aligned = np.stack([plan.starts, plan.starts + 3.2], 1) * RATE
  assert np.abs(plan.audio_ranges - aligned).max() < 0.2 * RATE
  assert plan.audio_ranges.max() <= num_samples
  # Frames: nearest to t = k / 5 s, all covered by windows.
  times = np.arange(len(plan.frame_indices)) / 5
  assert np.abs(plan.frame_indices / fps - times).max() <= 0.5 / fps + 1e-9
  assert plan.window_frames.max() == len(plan.frame_indices) - 1


def test_odd_sample_count_drops_the_frame_no_window_reaches():
  plan = plan_windows(int(3.7 * 25), 25.0, int(3.7 * RATE))  # 19 sampling times
  assert len(plan.frame_indices) == 18 and plan.num_windows == 2


def test_long_videos_are_capped_at_ten_seconds():
  plan = plan_windows(500, 25.0, 320000)
  assert len(plan.frame_indices) == 50 and plan.frame_indices[-1] == 245
  assert plan.num_windows == 18 and plan.audio_ranges[-1].tolist() == [108800, 160000]
  assert len(plan_windows(500, 25.0, 320000, max_seconds=4.0).frame_indices) == 20


def test_short_video_is_one_padded_window():
  plan = plan_windows(50, 25.0, 32000)
  assert plan.padded and plan.num_windows == 1 and plan.starts.tolist() == [0.0]
  np.testing.assert_array_equal(plan.frame_indices, 5 * np.arange(10))
  assert plan.window_frames[0].tolist() == list(range(10)) + [9] * 6
  assert plan.audio_ranges.tolist() == [[0, 32000]] and plan.window_samples == 51200
  exactly_one = plan_windows(80, 25.0, 51200)
  assert not exactly_one.padded and exactly_one.num_windows == 1


def fixed_box(frame):
  return (4.0, 4.0, 28.0, 28.0)


MARKS = (0.0, 1.0, 2.6, 3.0, 4.2, 5.8)  # seconds; 6 s video at 25 fps


def marked_media(seconds=6.0, fps=25):
  """Dark frames with one bright frame at each mark; silence with a 5 ms click at each mark."""
  frames = np.full((int(seconds * fps), 32, 32, 3), 10, np.uint8)
  audio = np.zeros(int(seconds * RATE), np.float32)
  for mark in MARKS:
    frames[int(round(mark * fps))] = 240
    audio[int(round(mark * RATE)):int(round(mark * RATE)) + 80] = 0.9
  return Media("marks.mp4", frames, float(fps), audio, RATE)


def test_every_window_sees_each_mark_at_the_same_time_in_frames_and_audio():
  windows = extract_windows(marked_media(), fixed_box, crop_size=32)
  assert windows.status == OK and windows.plan.num_windows == 8
  for i, start in enumerate(windows.plan.starts):
    brightness = windows.window_video(i).mean(axis=(1, 2, 3))
    seen = np.nonzero(brightness > 128)[0] * 0.2
    loud = windows.audio[i] > 0.5
    onsets = np.nonzero(loud & ~np.concatenate([[False], loud[:-1]]))[0] / RATE
    expected = [m - start for m in MARKS if start - 1e-9 <= m < start + 3.2 - 1e-9]
    assert len(seen) == len(onsets) == len(expected), (i, seen, onsets)
    np.testing.assert_allclose(seen, expected, atol=0.1)  # half a sampled frame
    np.testing.assert_allclose(onsets, expected, atol=0.1)


def test_audio_slices_are_their_waveform_minus_its_mean():
  rng = np.random.default_rng(0)
  media = marked_media()
  audio = (0.3 + 0.1 * rng.standard_normal(len(media.audio))).astype(np.float32)
  windows = extract_windows(Media(media.path, media.frames, media.fps, audio, RATE), fixed_box,
                            crop_size=32)
  assert windows.audio.shape == (8, 51200) and windows.audio.dtype == np.float32
  np.testing.assert_allclose(windows.audio.mean(axis=1), 0.0, atol=1e-6)
  start, end = windows.plan.audio_ranges[3]
  np.testing.assert_allclose(windows.audio[3], audio[start:end] - audio[start:end].mean(),
                             atol=1e-6)


def two_halves(seconds=6.0, fps=25):
  """64×32 frames: left half red 50, right half red 200; blue pixel (0, 0) = frame index."""
  frames = np.zeros((int(seconds * fps), 32, 64, 3), np.uint8)
  frames[:, :, :32, 0], frames[:, :, 32:, 0] = 50, 200
  frames[:, 0, 0, 2] = np.arange(len(frames))
  return Media("halves.mp4", frames, float(fps), None, RATE)


def test_frames_without_a_face_borrow_the_nearest_box():
  def detect(frame):  # a face on the left before frame 50, none up to 99, then on the right
    index = int(frame[0, 0, 2])
    return (8, 8, 24, 24) if index < 50 else None if index < 100 else (40, 8, 56, 24)

  windows = extract_windows(two_halves(), detect, crop_size=32)
  assert windows.status == PARTIAL_FACE and windows.audio is None
  sampled = 5 * np.arange(30)
  np.testing.assert_array_equal(windows.faces_detected, (sampled < 50) | (sampled >= 100))
  # Sampled frames 10..19 have no face: 10..14 are nearer frame 9 (left), 15..19 frame 20.
  red = windows.crops[:, 8:24, 8:24, 0].mean(axis=(1, 2))
  np.testing.assert_array_equal(red, np.where(np.arange(30) < 15, 50, 200))


def test_no_face_anywhere_crops_the_centre_square():
  media = two_halves()
  windows = extract_windows(media, lambda frame: None, crop_size=32)
  assert windows.status == NO_FACE and not windows.faces_detected.any()
  np.testing.assert_array_equal(windows.crops, media.frames[windows.plan.frame_indices, :, 16:48])


def test_short_video_is_padded_to_one_window():
  audio = np.linspace(-0.5, 0.5, 32000, dtype=np.float32) + 0.25
  numbered = two_halves(seconds=2.0)
  media = Media("short.mp4", numbered.frames, 25.0, audio, RATE)
  windows = extract_windows(media, fixed_box, crop_size=32)  # box: the frame's left square
  assert windows.status == SHORT_PADDED
  video = windows.window_video(0)
  assert video.shape == (16, 32, 32, 3) and windows.crops.shape == (16, 32, 32, 3)
  # Frames 0, 5, …, 45, then frame 45 repeated: read from the index pixel the crop keeps.
  assert video[:, 0, 0, 2].tolist() == list(range(0, 50, 5)) + [45] * 6
  assert windows.audio.shape == (1, 51200)
  np.testing.assert_allclose(windows.audio[0, :32000], audio - audio.mean(), atol=1e-6)
  assert not windows.audio[0, 32000:].any()
  partial = extract_windows(media, lambda f: fixed_box(f) if f[0, 0, 2] < 20 else None)
  assert partial.status == PARTIAL_FACE  # a missing face outranks the padding


def test_mtcnn_windows_of_a_synthetic_talking_face(tmp_path):
  from havic_jax.data import synthetic
  from havic_jax.media.decode import read_media
  from havic_jax.media.faces import mtcnn_detector, process_detector
  identities = synthetic.make_identities(2, seed=0)
  row = synthetic.plan_corpus(1, identities)[0]
  frames, track = synthetic.synthesize_video(row, identities, seed=0, duration=3.4)
  synthetic.write_mp4(tmp_path / "face.mp4", frames, synthetic.FPS, track, RATE)
  media = read_media(tmp_path / "face.mp4")
  windows = extract_windows(media, process_detector(mtcnn_detector))
  assert windows.status == OK and windows.faces_detected.tolist() == [True] * 16
  assert windows.window_video(0).shape == (16, 224, 224, 3)
  # 3.4 s: 17 sampling times, 16 used; the decoded AAC runs a little past the video.
  assert windows.audio.shape == (1, int(16 / 17 * len(media.audio)))
