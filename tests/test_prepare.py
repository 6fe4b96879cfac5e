"""Preparation: dataset readers, splits, clip records, shards, resume and bad inputs."""

import csv
import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import bench_preparation
from havic_jax.data import prepare, synthetic
from havic_jax.data import sources, records
from havic_jax.data.records import open_prepared
from havic_jax import storage
from havic_jax.media.decode import MediaError, clip_frame_indices, read_media
from havic_jax.media.faces import (BOX_SCALE, CROP_SIZE, crop_faces, crop_region,
                                   interpolated_boxes, keyframes, mtcnn_detector,
                                   process_detector)
from havic_jax.media.windows import centre_square

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_record_round_trip():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (16, 24, 32, 3), dtype=np.uint8)
  audio = rng.integers(-32768, 32767, 51200, dtype=np.int16)
  record = records.ClipRecord(frames, audio, 1, 0, 1, "RVFA", "id01", "a/b.mp4", 3.2)
  raw = records.decode(records.encode(record, "raw"))
  np.testing.assert_array_equal(raw.frames, frames)
  np.testing.assert_array_equal(raw.audio, audio)
  assert raw.metadata() == record.metadata()
  smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, None, :, None],
                           frames.shape).copy()
  jpeg = records.decode(records.encode(dataclasses.replace(record, frames=smooth), "jpeg"))
  assert np.abs(jpeg.frames.astype(int) - smooth).max() <= 8  # lossy, quality 95
  with pytest.raises(records.RecordError, match="magic"):
    records.decode(b"XXXX" + b"\0" * 8)


def test_fakeavceleb_categories():
  category = sources.fakeavceleb_category
  assert category("RealVideo-RealAudio", "real") == "real"
  assert category("RealVideo-FakeAudio", "rtvc") == "RVFA"
  assert category("FakeVideo-RealAudio", "wav2lip") == "FVRA-WL"
  assert category("FakeVideo-RealAudio", "faceswap") == "FVRA-FS"
  assert category("FakeVideo-FakeAudio", "faceswap-wav2lip") == "FVFA-FS"
  assert category("FakeVideo-FakeAudio", "fsgan-wav2lip") == "FVFA-GAN"
  assert category("FakeVideo-FakeAudio", "wav2lip") == "FVFA-WL"
  with pytest.raises(sources.DatasetError):
    category("RealVideo-Fake", "real")


def _entries(n):
  kinds = ["real", "RVFA", "FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL", "FVRA-FS"]
  return [sources.VideoEntry(f"/v{i}.mp4", f"v{i:03d}", 0, 0, int(i % 7 > 0), kinds[i % 7],
                              f"id{i % 23}") for i in range(n)]


@pytest.mark.parametrize("by", ["video", "identity"])
def test_fakeavceleb_splits(by):
  entries = sources.fakeavceleb_splits(_entries(700), seed=5, by=by)
  train = {e.video_id for e in entries if "train" in e.splits}
  test = {e.video_id for e in entries if "test" in e.splits}
  assert train.isdisjoint(test) and len(train | test) == 700
  if by == "video":
    assert len(train) == 490
  else:
    train_ids = {e.identity for e in entries if "train" in e.splits}
    assert train_ids.isdisjoint({e.identity for e in entries if "test" in e.splits})
    assert len(train_ids) == 16  # round(0.7 · 23)
  again = sources.fakeavceleb_splits(_entries(700), seed=5, by=by)
  assert [e.splits for e in again] == [e.splits for e in entries]  # seeded
  other = sources.fakeavceleb_splits(_entries(700), seed=6, by=by)
  assert [e.splits for e in other] != [e.splits for e in entries]
  for category in sources.LEAVE_ONE_OUT_CATEGORIES:
    loo_train = [e for e in entries if f"loo-{category}-train" in e.splits]
    loo_test = [e for e in entries if f"loo-{category}-test" in e.splits]
    assert all(e.category != category and e.video_id in train for e in loo_train)
    assert {e.video_id for e in loo_test if e.category == category} == {
        e.video_id for e in entries if e.category == category}  # every video of the category
    assert all(e.category in (category, "real") for e in loo_test)
    assert all(e.video_id in test for e in loo_test if e.category == "real")


def test_lrs2_and_voxceleb2_layouts(tmp_path):
  lrs2 = tmp_path / "lrs2"
  for rel in ("main/100/00001.mp4", "main/100/00002.mp4", "main/200/00001.mp4",
              "pretrain/300/00001.mp4"):
    (lrs2 / rel).parent.mkdir(parents=True, exist_ok=True)
    (lrs2 / rel).write_bytes(b"")
  (lrs2 / "train.txt").write_text("100/00001\n100/00002\n")
  (lrs2 / "test.txt").write_text("200/00001 NF\n")
  entries = {e.video_id: e for e in sources.read_lrs2(str(lrs2))}
  assert entries["main/100/00002.mp4"].splits == ("train",)
  assert entries["main/200/00001.mp4"].splits == ("test",)
  assert entries["pretrain/300/00001.mp4"].splits == ("pretrain",)
  assert all(e.overall_label == 0 for e in entries.values())
  vox = tmp_path / "vox"
  for rel in ("dev/mp4/id00012/abc/00001.mp4", "dev/mp4/id00012/def/00002.mp4",
              "test/mp4/id00099/xyz/00001.mp4"):
    (vox / rel).parent.mkdir(parents=True, exist_ok=True)
    (vox / rel).write_bytes(b"")
  entries = sources.read_voxceleb2(str(vox))
  assert [(e.identity, e.splits) for e in entries] == [
      ("id00012", ("dev",)), ("id00012", ("dev",)), ("id00099", ("test",))]
  with pytest.raises(sources.DatasetError, match="no videos"):
    sources.read_voxceleb2(str(lrs2))


def test_prepared_corpus_manifest_and_records(prepared_corpus, synthetic_corpus):
  manifest = open_prepared(str(prepared_corpus)).manifest
  assert manifest["format_version"] == records.FORMAT_VERSION
  assert manifest["counts"]["videos"] == manifest["counts"]["videos_prepared"] == 8
  assert manifest["counts"]["clips"] == 8 and len(manifest["shards"]) == 3
  assert not manifest["rejected"]
  assert sorted(len(manifest["splits"][s]) for s in ("train", "test")) == [2, 6]
  meta = {row[8]: row for row in csv.reader(
      (synthetic_corpus / "FakeAVCeleb" / "meta_data.csv").read_text().splitlines()[1:])}
  data = open_prepared(str(prepared_corpus))
  source = data.source()
  assert len(source) == 8
  for video in manifest["videos"]:
    clip = records.decode(source[video["first_record"]])
    assert clip.video_id == video["video_id"] and clip.clip_start == 0.0
    assert clip.frames.shape == (16, CROP_SIZE, CROP_SIZE, 3) and clip.audio.shape == (51200,)
    row = meta[pathlib.PurePosixPath(clip.video_id).name]
    labels = synthetic.labels_from_type(row[5])
    assert (clip.visual_label, clip.audio_label, clip.overall_label) == (
        labels["video_fake"], labels["audio_fake"], labels["fake"])
    assert clip.identity == row[0]


def test_face_crops_contain_the_face(prepared_corpus):
  """A crop is the detector box ×1.3 resized to 224², so the face fills its central 1/1.3."""
  detect = process_detector(mtcnn_detector)
  margin = CROP_SIZE * (1 - 1 / BOX_SCALE) / 2
  expected = (margin, margin, CROP_SIZE - margin, CROP_SIZE - margin)
  data = open_prepared(str(prepared_corpus))
  source = data.source()
  unswapped = [v["first_record"] for v in data.manifest["videos"]
               if v["category"] in ("real", "RVFA")]  # a swapped face is a smaller inner face
  assert len(unswapped) >= 3
  for index in unswapped[:3]:
    frames = records.decode(source[index]).frames
    for frame in frames[::5]:
      box = detect(frame)
      assert box is not None and bench_preparation.box_iou(box, expected) > 0.5, (index, box)


def test_bad_inputs_are_reported_and_the_run_resumes(tmp_path, synthetic_corpus, bad_videos):
  good = sorted((synthetic_corpus / "FakeAVCeleb").rglob("*.mp4"))[:2]
  rows = [(p, 0) for p in good] + [(bad_videos[n], 1) for n in
                                   ("corrupt.mp4", "notes.mp4", "faceless.mp4", "silent.mp4")]
  listing = tmp_path / "videos.csv"
  listing.write_text("video_path,overall_label\n" + "".join(f"{p},{l}\n" for p, l in rows))
  output = tmp_path / "out"
  command = [sys.executable, "-m", "data_pipelines.prepare", "--dataset=csv",
             f"--input={listing}", f"--output={output}", "--workers=1", "--videos_per_shard=4"]
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "4 videos rejected" in result.stdout
  manifest = open_prepared(str(output)).manifest
  reasons = {pathlib.Path(r["path"]).name: r["reason"] for r in manifest["rejected"]}
  assert reasons == {"corrupt.mp4": "unreadable", "notes.mp4": "unreadable",
                     "faceless.mp4": "no_face", "silent.mp4": "no_audio"}
  assert all(r["message"] for r in manifest["rejected"])
  assert {v["video_id"] for v in manifest["videos"]} == {str(p) for p in good}
  assert manifest["counts"]["clips"] == 2
  # Re-running skips both finished shards; a shard whose description is gone is redone.
  shards = sorted(output.glob("*.array_record"))
  stamps = [p.stat().st_mtime_ns for p in shards]
  prepare.prepare("csv", str(listing), str(output), workers=1, videos_per_shard=4)
  assert [p.stat().st_mtime_ns for p in shards] == stamps
  shards[1].with_suffix(".json").unlink()
  again = prepare.prepare("csv", str(listing), str(output), workers=1, videos_per_shard=4)
  assert shards[0].stat().st_mtime_ns == stamps[0]
  assert shards[1].stat().st_mtime_ns != stamps[1]
  assert again["videos"] == manifest["videos"] and again["rejected"] == manifest["rejected"]


def test_read_video_of_a_bucket_object_names_the_object(gcs_bucket, bad_videos):
  """A gs:// video is read through a local copy: the media and every error name the object."""
  good, corrupt = f"{gcs_bucket}/read_video/silent.mp4", f"{gcs_bucket}/read_video/corrupt.mp4"
  storage.path(good).write_bytes(bad_videos["silent.mp4"].read_bytes())
  storage.path(corrupt).write_bytes(bad_videos["corrupt.mp4"].read_bytes())
  media = prepare.read_video(good)
  assert media.path == good
  assert media.frames.shape == read_media(str(bad_videos["silent.mp4"])).frames.shape
  for uri in (corrupt, f"{gcs_bucket}/read_video/missing.mp4"):
    with pytest.raises(MediaError) as error:
      prepare.read_video(uri)
    assert uri in str(error.value) and "/tmp" not in str(error.value)


def test_bad_dataset_is_explained():
  with pytest.raises(sources.DatasetError, match="meta_data.csv"):
    prepare.prepare("fakeavceleb", "/nonexistent", "/tmp/unused_output")


def test_out_of_domain_folder_is_prepared_with_centre_crops(faceless_videos, tmp_path):
  options = prepare.PrepareOptions(frame_encoding="raw", crop="centre")
  manifest = prepare.prepare("folder", str(faceless_videos), str(tmp_path / "out"),
                             options=options)
  assert manifest["counts"]["clips"] == 2 and not manifest["rejected"]
  assert manifest["splits"] == {"all": ["sub0/clip0.mp4", "sub1/clip1.mp4"]}
  assert {(v["overall_label"], v["identity"]) for v in manifest["videos"]} == {(0, "")}
  # The stored frames are the centre squares of the clip's linspace-sampled frames.
  media = read_media(faceless_videos / "sub1/clip1.mp4")
  in_clip = np.nonzero(np.arange(len(media.frames)) / media.fps < 3.2 - 1e-6)[0]
  chosen = media.frames[in_clip[clip_frame_indices(len(in_clip))]]
  expected = np.stack([crop_region(f, centre_square(320, 160)) for f in chosen])
  record = records.decode(open_prepared(str(tmp_path / "out")).source()[1])
  assert record.video_id == "sub1/clip1.mp4"
  np.testing.assert_array_equal(record.frames, expected)
  with pytest.raises(ValueError, match="crop must be one of"):
    prepare.PrepareOptions(crop="faces")


def test_detect_every_detects_keyframes_and_interpolates_between():
  assert keyframes(16, 1).tolist() == list(range(16))
  assert keyframes(16, 4).tolist() == [0, 4, 8, 12, 15]
  frames = np.full((16, 120, 160, 3), 60, np.uint8)
  for i in range(16):  # a block moving 2 px a frame to the right
    frames[i, 30:70, 20 + 2 * i:60 + 2 * i] = 255
  detected_frames = []

  def detect(frame):
    detected_frames.append(frame)
    ys, xs = np.nonzero(frame[..., 0] == 255)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1

  every, _ = crop_faces(frames, detect)
  detected_frames.clear()
  sparse, detected = crop_faces(frames, detect, detect_every=4)
  assert len(detected_frames) == 5 and detected.all()
  np.testing.assert_array_equal(sparse, every)  # linear motion is interpolated exactly
  # A keyframe without a face leaves the frames on either side without a box of their own.
  a, b = (0, 0, 10, 10), (8, 0, 18, 10)
  assert interpolated_boxes(5, [0, 2, 4], [a, None, b]) == [a, None, None, None, b]
  assert interpolated_boxes(3, [0, 2], [a, b])[1] == (4, 0, 14, 10)
  with pytest.raises(ValueError, match="detect_every"):
    prepare.PrepareOptions(detect_every=0)


def test_detect_every_crops_agree_with_every_frame_detection(synthetic_corpus):
  """MTCNN on every 4th frame with interpolated boxes, against every frame, on real clips."""
  video = sorted((synthetic_corpus / "FakeAVCeleb" / "RealVideo-RealAudio").rglob("*.mp4"))[0]
  [agreement] = bench_preparation.crop_agreement([video], ["4"])
  assert agreement["clips"] == 1 and agreement["clips_changed"] == 0
  assert agreement["iou_mean"] > 0.9 and agreement["iou_min"] > 0.7, agreement
