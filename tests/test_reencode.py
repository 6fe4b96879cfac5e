"""Re-encoding for the robustness protocol: both conditions decode with the same frames, size and
rate, carry their audio rate, CRF 40 costs fewer bits; bad files and audio-less or odd-sized
videos."""

import av
import numpy as np
import pytest

from havic_jax.data.synthetic import write_mp4
from havic_jax.media.decode import MediaError, read_media
from havic_jax.media.reencode import CONDITIONS, reencode

FPS, RATE, SECONDS, TONE_HZ = 25, 16000, 2.0, 440.0


def moving_pattern(num_frames, height=96, width=128):
  """uint8 [N, H, W, 3]: drifting sinusoidal stripes and a sliding ramp (detail to compress)."""
  x, y = np.arange(width)[None, None], np.arange(height)[None, :, None]
  t = np.arange(num_frames)[:, None, None]
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  frames[..., 0] = 127 + 100 * np.sin((x + 3 * t) / 5) * np.cos(y / 7)
  frames[..., 1] = (2 * x + t) % 256
  frames[..., 2] = 127 + 100 * np.sin((x - y + 2 * t) / 3)
  return frames


def tone(seconds, rate):
  return (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(int(seconds * rate)) / rate)
          ).astype(np.float32)


def stream_bytes(path, kind):
  with av.open(str(path)) as container:
    stream = getattr(container.streams, kind)[0]
    return sum(packet.size for packet in container.demux(stream))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = tmp_path_factory.mktemp("reencode") / "source.mp4"
  write_mp4(path, moving_pattern(int(FPS * SECONDS)), FPS, tone(SECONDS, RATE), RATE)
  return path


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_reencoded_video_keeps_frames_size_rate_and_the_tone(source, tmp_path, name):
  condition = CONDITIONS[name]
  output = tmp_path / f"{name}.mp4"
  reencode(source, output, condition)
  assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary left
  with av.open(str(output)) as container:
    video, audio = container.streams.video[0], container.streams.audio[0]
    assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
    assert (video.width, video.height) == (128, 96) and video.average_rate == FPS
    assert audio.codec_context.name == "aac" and audio.rate == condition.audio_rate
    assert audio.channels == 1
  media = read_media(output)
  assert abs(len(media.frames) - FPS * SECONDS) <= 1 and media.frames.shape[1:] == (96, 128, 3)
  original = read_media(source).frames.astype(float)
  assert np.abs(media.frames[:10].astype(float) - original[:10]).mean() < 30
  middle = media.audio[4000:28000]
  peak_hz = np.argmax(np.abs(np.fft.rfft(middle))) * RATE / len(middle)
  assert peak_hz == pytest.approx(TONE_HZ, abs=2)


def test_crf_40_spends_fewer_video_bits_than_crf_23(source, tmp_path):
  sizes = {}
  for name, condition in CONDITIONS.items():
    reencode(source, tmp_path / f"{name}.mp4", condition)
    sizes[condition.crf] = stream_bytes(tmp_path / f"{name}.mp4", "video")
  assert sizes[40] < 0.7 * sizes[23]


def test_unreadable_file_is_a_media_error_naming_it(tmp_path):
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"not a video at all" * 100)
  with pytest.raises(MediaError, match="broken.mp4"):
    reencode(broken, tmp_path / "out.mp4", CONDITIONS["crf23_44k"])
  assert not (tmp_path / "out.mp4").exists()


def test_video_without_audio_stays_without_audio(tmp_path):
  silent = tmp_path / "silent.mp4"
  write_mp4(silent, moving_pattern(20, 48, 64), FPS, None, RATE)
  reencode(silent, tmp_path / "out.mp4", CONDITIONS["crf40_16k"])
  media = read_media(tmp_path / "out.mp4")
  assert media.audio is None and media.frames.shape == (20, 48, 64, 3)


def test_odd_sized_video_is_cropped_to_even_size(tmp_path):
  odd = tmp_path / "odd.mp4"
  with av.open(str(odd), "w") as container:  # yuv444p allows odd sizes; yuv420p does not
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 65, 49, "yuv444p"
    for image in moving_pattern(10, 49, 65):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
  reencode(odd, tmp_path / "out.mp4", CONDITIONS["crf23_44k"])
  assert read_media(tmp_path / "out.mp4").frames.shape == (10, 48, 64, 3)


def test_a_failed_write_leaves_no_file_and_no_staging(tmp_path):
  from havic_jax.media.reencode import write_video
  frames = moving_pattern(10)
  with pytest.raises(ValueError):  # audio [S, 2]: refused after the video frames are written
    write_video(tmp_path / "out.mp4", frames, FPS, np.zeros((RATE, 2), np.float32), RATE, 23)
  assert list(tmp_path.iterdir()) == []
