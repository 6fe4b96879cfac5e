"""The synthetic FakeAVCeleb-like corpus: layout, decodable mp4s, lip-sync, determinism."""

import csv

import av
import numpy as np
import pytest

from havic_jax.data import synthetic, synthetic_audio

DURATION = 3.3
SEED = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(dataset parent directory, row dicts) of a four-video corpus."""
  output = tmp_path_factory.mktemp("synthetic")
  return output, synthetic.generate_corpus(output, 4, seed=SEED, duration=DURATION)


def decode(path):
  """(uint8 [F, H, W, 3] frames, float32 [S] mono audio, container duration in s, stream codecs)."""
  with av.open(str(path)) as container:
    codecs = (container.streams.video[0].codec_context.name,
              container.streams.audio[0].codec_context.name)
    duration = container.duration / 1e6
    frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  with av.open(str(path)) as container:
    audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
  return frames, audio, duration, codecs


def mouth_darkness(frames):
  """float [F]: how dark the mouth region is per frame (255 minus its mean grey level)."""
  rows, cols = synthetic.mouth_region(frames.shape[1])
  return 255.0 - frames[:, rows, cols].astype(np.float64).mean(axis=(1, 2, 3))


def lagged_correlation(mouth, sound, lag):
  """Pearson correlation of mouth[t + lag] with sound[t]."""
  return np.corrcoef(mouth[lag:], sound[:len(sound) - lag])[0, 1]


def test_layout_and_meta_data(corpus):
  output, rows = corpus
  meta = output / "FakeAVCeleb" / "meta_data.csv"
  lines = meta.read_text().splitlines()
  assert lines[0] == "source,target1,target2,method,category,type,race,gender,path,"
  records = list(csv.reader(lines[1:]))
  assert len(records) == len(rows) == 4
  assert {record[5] for record in records} == set(synthetic.TYPES)
  for record, row in zip(records, rows):
    assert len(record) == 10
    source, target1, _, method, category, type_name, race, gender, file_name, folder = record
    assert folder == f"FakeAVCeleb/{type_name}/{race}/{gender}/{source}"
    assert (output / folder / file_name).is_file()
    assert category == synthetic.CATEGORIES[type_name]
    labels = synthetic.labels_from_type(type_name)
    face_swapped = row["face"] != row["source_index"]
    voice_changed = row["voice"] != row["source_index"] or row["audio_shift_s"] > 0
    assert labels["video_fake"] == face_swapped
    assert labels["audio_fake"] == voice_changed
    assert labels["fake"] == (method != "real")
    assert (target1 != "-") == (face_swapped or row["voice"] != row["source_index"])
  written = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
  assert written == sorted([f"{r['folder']}/{r['path']}" for r in rows]
                           + ["FakeAVCeleb/meta_data.csv"])  # nothing half-written left over


def test_labels_from_type():
  assert synthetic.labels_from_type("RealVideo-RealAudio") == {
      "video_fake": False, "audio_fake": False, "fake": False}
  assert synthetic.labels_from_type("FakeVideo-RealAudio")["video_fake"]
  with pytest.raises(ValueError):
    synthetic.labels_from_type("RealVideo-Fake")


def test_videos_decode(corpus):
  output, rows = corpus
  for row in rows:
    frames, audio, duration, codecs = decode(output / row["folder"] / row["path"])
    assert codecs == ("h264", "aac")
    assert abs(duration - DURATION) < 0.1
    assert abs(len(frames) - DURATION * synthetic.FPS) <= 1
    assert frames.shape[1:] == (synthetic.FRAME_SIZE, synthetic.FRAME_SIZE, 3)
    assert frames.std() > 20  # a picture, not a flat colour
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).max() > 50  # and it moves
    assert abs(len(audio) / synthetic.SAMPLE_RATE - DURATION) < 0.1
    assert 0.02 < np.sqrt(np.mean(audio ** 2)) < 0.5


def test_mouth_tracks_audio_in_real_video_only(corpus):
  output, rows = corpus
  real = next(r for r in rows if r["type"] == "RealVideo-RealAudio")
  shifted = next(r for r in rows if r["type"] == "RealVideo-FakeAudio" and r["audio_shift_s"])
  for row in (real, shifted):
    frames, audio, _, _ = decode(output / row["folder"] / row["path"])
    mouth = mouth_darkness(frames)
    sound = synthetic_audio.envelope_per_frame(audio, synthetic.SAMPLE_RATE, synthetic.FPS,
                                               len(frames))
    correlations = [lagged_correlation(mouth, sound, lag) for lag in range(25)]
    expected_lag = round(row["audio_shift_s"] * synthetic.FPS)
    assert abs(int(np.argmax(correlations)) - expected_lag) <= 1, (row["path"], correlations)
    assert max(correlations) > 0.8
    if expected_lag:
      assert correlations[0] < 0.5  # in sync the mouth no longer follows the sound


def test_same_seed_same_corpus(corpus, tmp_path):
  output, rows = corpus
  again = synthetic.generate_corpus(tmp_path, 4, seed=SEED, duration=DURATION)
  meta = "FakeAVCeleb/meta_data.csv"
  assert (tmp_path / meta).read_bytes() == (output / meta).read_bytes()
  first, _, _, _ = decode(output / rows[0]["folder"] / rows[0]["path"])
  second, _, _, _ = decode(tmp_path / again[0]["folder"] / again[0]["path"])
  np.testing.assert_array_equal(first[0], second[0])

  identities = synthetic.make_identities(2, SEED)
  frames, audio = synthetic.synthesize_video(rows[1], identities, SEED, DURATION)
  frames_again, audio_again = synthetic.synthesize_video(rows[1], identities, SEED, DURATION)
  np.testing.assert_array_equal(frames, frames_again)
  np.testing.assert_array_equal(audio, audio_again)
  _, other_audio = synthetic.synthesize_video(rows[1], identities, SEED + 1, DURATION)
  assert not np.array_equal(audio, other_audio)


def test_speech_like_audio():
  rng = np.random.default_rng(0)
  audio = synthetic_audio.speech_like_audio(rng, 2.0, 16_000, pitch_hz=150.0)
  assert audio.shape == (32_000,) and audio.dtype == np.float32
  assert np.abs(audio).max() <= 1.0
  spectrum = np.abs(np.fft.rfft(audio))
  peak_hz = np.argmax(spectrum) * 16_000 / len(audio)
  assert 120 < peak_hz < 180  # the fundamental, within the ±12% pitch drift
  envelope = synthetic_audio.envelope_per_frame(audio, 16_000, 25, 50)
  assert envelope.min() < 0.1 and envelope.max() == pytest.approx(1.0)  # syllables and pauses
