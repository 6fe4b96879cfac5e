"""Media decoding: frames, 16 kHz mono audio aligned with them, clip sampling, bad files."""

import fractions

import av
import numpy as np
import pytest

from havic_jax.media.decode import MediaError, clip_frame_indices, read_media

FPS, RATE, SECONDS = 25, 44100, 2.0


def write_test_video(path, with_audio=True):
  """Frames whose brightness steps up at t = 1 s and a 440 Hz tone that starts at t = 1 s."""
  n = int(FPS * SECONDS)
  with av.open(str(path), "w") as out:
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    if with_audio:
      audio = out.add_stream("aac", rate=RATE)
      audio.layout = "stereo"
    for i in range(n):
      level = 200 if i >= FPS else 30
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8), format="rgb24")
      out.mux(video.encode(frame))
    out.mux(video.encode())
    if with_audio:
      t = np.arange(int(RATE * SECONDS)) / RATE
      tone = (0.5 * np.sin(2 * np.pi * 440 * t) * (t >= 1.0)).astype(np.float32)
      samples = np.stack([tone, tone])
      step = 1024
      for start in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, start:start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, RATE)
        out.mux(audio.encode(frame))
      out.mux(audio.encode())


def test_frames_and_audio_carry_the_same_timing_mark(tmp_path):
  path = tmp_path / "mark.mp4"
  write_test_video(path)
  media = read_media(path)
  assert media.frames.shape == (50, 48, 64, 3) and media.frames.dtype == np.uint8
  assert media.fps == FPS and media.duration == pytest.approx(SECONDS)
  brightness = media.frames.mean(axis=(1, 2, 3))
  assert np.argmax(brightness > 115) == FPS  # the video mark is at frame 25 = 1.0 s
  assert media.sample_rate == 16000 and media.audio.dtype == np.float32
  assert abs(len(media.audio) - 16000 * SECONDS) < 0.05 * 16000
  envelope = np.abs(media.audio)
  onset = np.argmax(envelope > 0.2) / 16000
  assert onset == pytest.approx(1.0, abs=0.05)  # the audio mark, within AAC priming
  spectrum = np.abs(np.fft.rfft(media.audio[16000:]))
  assert np.argmax(spectrum) * 16000 / len(media.audio[16000:]) == pytest.approx(440, abs=5)


def test_video_without_audio(tmp_path):
  path = tmp_path / "silent.mp4"
  write_test_video(path, with_audio=False)
  media = read_media(path)
  assert media.audio is None and len(media.frames) == 50


def test_corrupt_and_missing_files_name_the_file(tmp_path):
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
  with pytest.raises(MediaError, match="corrupt.mp4"):
    read_media(corrupt)
  with pytest.raises(MediaError, match="missing.mp4"):
    read_media(tmp_path / "missing.mp4")


def test_clip_frame_indices_follow_linspace():
  np.testing.assert_array_equal(clip_frame_indices(80), np.linspace(0, 79, 16).astype(int))
  assert list(clip_frame_indices(80)[:4]) == [0, 5, 10, 15]
  assert clip_frame_indices(16).tolist() == list(range(16))
