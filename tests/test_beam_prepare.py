"""prepare --runner=beam (a real Apache Beam DirectRunner, 2 worker processes) against the local
runner on the synthetic corpus with a corrupt file: the same files byte for byte, the corrupt
file reported with its reason, a re-run that does nothing, an interrupted run resumed, and the
same shards from videos read from and written to gs:// (a Cloud Storage emulator)."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from havic_jax.data import beam as beam_pipeline
from havic_jax.data import prepare, records, sources, video_index
from havic_jax import storage

ROOT = pathlib.Path(__file__).resolve().parents[1]
VIDEOS_PER_SHARD = 3  # 8 videos: shards of 3, 3 and 2
TWO_PROCESSES = ("--runner=DirectRunner --direct_num_workers=2 "
                 "--direct_running_mode=multi_processing")
DIRECT = beam_pipeline.runner("--runner=DirectRunner")  # in this process


def output_files(directory):
  """{file name: bytes} of a prepared directory, the manifest without its creation time."""
  files = {p.name: p.read_bytes() for p in directory.iterdir()}
  manifest = json.loads(files.pop(records.MANIFEST))
  del manifest["created"]
  return files, manifest


@pytest.fixture(scope="module")
def corpus(synthetic_corpus, tmp_path_factory):
  """(directory, corrupt entry): the synthetic corpus with one video cut to its first 3 kB."""
  root = tmp_path_factory.mktemp("beam_corpus")
  shutil.copytree(synthetic_corpus, root, dirs_exist_ok=True)
  corrupt = sources.read_fakeavceleb(str(root))[2]
  video = pathlib.Path(corrupt.path)
  video.write_bytes(video.read_bytes()[:3000])
  return root, corrupt


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory):
  output = tmp_path_factory.mktemp("local")
  prepare.prepare("fakeavceleb", str(corpus[0]), str(output), workers=1,
                  videos_per_shard=VIDEOS_PER_SHARD)
  return output


@pytest.fixture(scope="module")
def beam(corpus, tmp_path_factory):
  """(output directory, the command's stdout) of the CLI with --runner=beam, 2 processes."""
  output = tmp_path_factory.mktemp("beam")
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.prepare", "--dataset=fakeavceleb",
       f"--input={corpus[0]}", f"--output={output}", "--runner=beam",
       f"--beam_options={TWO_PROCESSES}", f"--videos_per_shard={VIDEOS_PER_SHARD}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return output, result.stdout


def test_beam_writes_the_local_files_and_reports_the_corrupt_video(corpus, local, beam):
  local_files, local_manifest = output_files(local)
  beam_files, beam_manifest = output_files(beam[0])
  assert sorted(beam_files) == sorted(local_files)  # no listing left behind
  assert len([name for name in local_files if name.endswith(".array_record")]) == 3
  for name, data in local_files.items():
    assert beam_files[name] == data, name
  assert beam_manifest == local_manifest
  counts = beam_manifest["counts"]
  assert (counts["videos"], counts["videos_prepared"], counts["clips"]) == (8, 7, 7)
  assert counts["rejected_by_reason"]["unreadable"] == 1
  corrupt = corpus[1]
  [rejected] = beam_manifest["rejected"]
  assert (rejected["video_id"], rejected["reason"]) == (corrupt.video_id, "unreadable")
  assert corrupt.path in rejected["message"]
  assert "1 videos rejected (1 unreadable)" in beam[1]


def test_rerun_does_nothing_and_an_interrupted_run_resumes(corpus, local, beam, tmp_path):
  output = tmp_path / "resumed"
  shutil.copytree(beam[0], output)
  shards = sorted(output.glob("*.array_record"))
  written = sorted(output.glob("clips-*"))
  stamps = {p: p.stat().st_mtime_ns for p in written}
  manifest = prepare.prepare("fakeavceleb", str(corpus[0]), str(output),
                             videos_per_shard=VIDEOS_PER_SHARD, run_shards=DIRECT)
  assert {p: p.stat().st_mtime_ns for p in written} == stamps
  assert manifest["counts"] == json.loads((local / records.MANIFEST).read_text())["counts"]
  # An interrupted run: shard 1 was being written (a partial file, no description).
  shards[1].with_suffix(".json").unlink()
  shards[1].rename(shards[1].with_name(shards[1].name + ".partial"))
  prepare.prepare("fakeavceleb", str(corpus[0]), str(output),
                  videos_per_shard=VIDEOS_PER_SHARD, run_shards=DIRECT)
  assert [p.stat().st_mtime_ns for p in (shards[0], shards[2])] == [
      stamps[shards[0]], stamps[shards[2]]]
  assert output_files(output) == output_files(local)


def test_listing_round_trips_entries(corpus):
  entries = sources.read_fakeavceleb(str(corpus[0]))
  lines = beam_pipeline.listing_lines({4: entries[:2], 1: entries[2:3]})
  items = [json.loads(line) for line in lines]
  assert [(item["shard"], item["position"]) for item in items] == [(1, 0), (4, 0), (4, 1)]
  assert [beam_pipeline.entry_from_fields(item["entry"]) for item in items] == [
      entries[2], entries[0], entries[1]]


def test_beam_reads_and_writes_cloud_storage(corpus, tmp_path, gcs_bucket):
  """Videos read from gs:// (--input_uri; --input lists them), shards written to gs://."""
  root, corrupt = corpus
  good = [e for e in sources.read_fakeavceleb(str(root)) if e is not corrupt][:2]
  listing = root / "three_videos.csv"
  listing.write_text("video_path,overall_label\n" + "".join(
      f"{pathlib.Path(e.path).relative_to(root)},{e.overall_label}\n" for e in good + [corrupt]))
  for entry in good + [corrupt]:
    relative = pathlib.Path(entry.path).relative_to(root)
    storage.path(f"{gcs_bucket}/videos/{relative}").write_bytes(pathlib.Path(entry.path)
                                                               .read_bytes())
  prepare.prepare("csv", str(listing), str(tmp_path / "local"), workers=1, videos_per_shard=2)
  remote = f"{gcs_bucket}/beam_prepared"
  prepare.prepare("csv", str(listing), remote, videos_per_shard=2, run_shards=DIRECT,
                  input_uri=f"{gcs_bucket}/videos")
  files, manifest = output_files(tmp_path / "local")
  bucket = storage.path(remote)
  remote_files = {p.name: p.read_bytes() for p in bucket.iterdir()}
  remote_manifest = json.loads(remote_files.pop(records.MANIFEST))
  del remote_manifest["created"]
  shards = sorted(name for name in files if name.endswith(".array_record"))
  assert sorted(remote_files) == sorted(files) and len(shards) == 2
  assert all(remote_files[name] == files[name] for name in shards)
  assert remote_files[video_index.INDEX_FILE] == files[video_index.INDEX_FILE]  # the videos
  assert remote_manifest["counts"] == manifest["counts"]
  assert manifest["counts"]["clips"] == 2 and manifest["counts"]["videos_rejected"] == 1
  [rejected] = remote_manifest["rejected"]
  assert rejected["reason"] == "unreadable"
  assert rejected["path"].startswith(f"{gcs_bucket}/videos/")
  assert rejected["path"] in rejected["message"] and "/tmp" not in rejected["message"]
