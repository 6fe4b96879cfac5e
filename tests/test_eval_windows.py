"""Scoring at scale: the eval binary's windows cut by an Apache Beam pipeline (DirectRunner),
scored by two processes joined by jax.distributed, and a scoring run killed with SIGKILL and
resumed, each against today's one-process eval on the same videos: a corrupt file, a video
without a face and a silent one among real and fake synthetic videos."""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from havic_jax.evaluation import evaluate, shard_scoring, window_shards
from havic_jax.evaluation.evaluate import EvalOptions
from local_services import free_port
from test_eval import classifier_export  # noqa: F401  (fixture)

ROOT = pathlib.Path(__file__).resolve().parents[1]
VIDEOS_PER_SHARD = 2


@pytest.fixture(scope="module")
def listing(tmp_path_factory, synthetic_corpus, bad_videos):
  """A CSV of two real and two fake synthetic videos, a corrupt file, a face-less and a silent
  video."""
  corpus = pathlib.Path(synthetic_corpus) / "FakeAVCeleb"
  real = sorted(corpus.glob("RealVideo-RealAudio/**/*.mp4"))[:2]
  fake = sorted(corpus.glob("FakeVideo-FakeAudio/**/*.mp4"))[:2]
  rows = ([(p, 0) for p in real] + [(p, 1) for p in fake]
          + [(bad_videos[n], 1) for n in ("corrupt.mp4", "faceless.mp4", "silent.mp4")])
  path = tmp_path_factory.mktemp("windows_listing") / "videos.csv"
  path.write_text("video_path,overall_label\n" + "".join(f"{p},{l}\n" for p, l in rows))
  return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, listing, classifier_export):
  """Today's one-process eval of the listing: the reference."""
  output = tmp_path_factory.mktemp("one_process") / "report"
  evaluate.run(str(classifier_export), str(listing),
               EvalOptions(protocol="all", output=str(output), batch_size=8))
  return output


@pytest.fixture(scope="module")
def beam_windows(tmp_path_factory, listing, classifier_export):
  """Window shards of the listing cut by the Beam DirectRunner (2 videos per shard)."""
  windows = tmp_path_factory.mktemp("beam_windows") / "windows"
  outcome = evaluate.run(str(classifier_export), str(listing), EvalOptions(
      protocol="all", output="", windows=str(windows), windows_only=True, runner="beam",
      beam_options="--runner=DirectRunner", videos_per_shard=VIDEOS_PER_SHARD))
  assert outcome["results"] == []
  return windows


def per_video(output):
  with open(pathlib.Path(output) / "per_video.csv", newline="") as file:
    return {row["video_id"]: row for row in csv.DictReader(file)}


def assert_same_report(output, reference):
  """Same videos, statuses and window counts, scores within 1e-6, same metrics."""
  ours, theirs = per_video(output), per_video(reference)
  assert sorted(ours) == sorted(theirs)
  for video_id, row in theirs.items():
    assert ours[video_id]["status"] == row["status"], video_id
    assert ours[video_id]["num_windows"] == row["num_windows"], video_id
    if row["score"] == "":  # not scored
      assert ours[video_id]["score"] == "", video_id
    else:
      assert float(ours[video_id]["score"]) == pytest.approx(float(row["score"]), abs=1e-6)
  metrics = lambda path: [table["columns"] for table in json.loads(
      (pathlib.Path(path) / "results.json").read_text())["protocols"]]
  for ours_table, theirs_table in zip(metrics(output), metrics(reference)):
    for column, values in theirs_table.items():
      for name, value in values.items():
        assert ours_table[column][name] == pytest.approx(value, abs=1e-6), (column, name)


def scoring_command(checkpoint, listing, windows, output, *extra):
  return [sys.executable, "-m", "havic_jax.eval", f"--checkpoint={checkpoint}",
          f"--data={listing}", "--protocol=all", f"--windows={windows}", f"--output={output}",
          "--batch_size=8", f"--videos_per_shard={VIDEOS_PER_SHARD}", *extra]


def environment():
  # Without the tests' persistent compilation cache (two-process CPU runs, see test_multihost).
  return {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}


def test_beam_windows_record_every_video_with_a_status(beam_windows, one_process, listing,
                                                        classifier_export):
  manifest = json.loads((beam_windows / window_shards.MANIFEST).read_text())
  assert len(manifest["shards"]) == 4  # 7 videos, 2 per shard
  statuses = {}
  for shard in manifest["shards"]:
    for task, windows in window_shards.read_shard(str(beam_windows), shard["file"]):
      statuses[task.video_id] = windows.status
      if windows.video is not None:
        assert windows.video.dtype == np.uint8 and len(windows.video) == len(windows.starts)
  reference = {video_id: row["status"] for video_id, row in per_video(one_process).items()}
  assert statuses == reference
  assert {"unreadable", "no_face", "no_audio"} <= set(statuses.values())
  # A re-run finds every shard finished and rewrites none.
  stamps = {p: p.stat().st_mtime_ns for p in beam_windows.glob("*.array_record")}
  evaluate.run(str(classifier_export), str(listing), EvalOptions(
      protocol="all", output="", windows=str(beam_windows), windows_only=True, runner="beam",
      beam_options="--runner=DirectRunner", videos_per_shard=VIDEOS_PER_SHARD))
  assert {p: p.stat().st_mtime_ns for p in beam_windows.glob("*.array_record")} == stamps


def test_two_processes_score_the_beam_windows_as_one_process_does(
    tmp_path, beam_windows, one_process, listing, classifier_export):
  output = tmp_path / "report"
  port = free_port()
  processes = [subprocess.Popen(
      scoring_command(classifier_export, listing, beam_windows, output,
                      f"--coordinator_address=localhost:{port}", "--num_processes=2",
                      f"--process_id={i}", "--allow_cpu"),
      cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert "report:" in outputs[0][0] and "report:" not in outputs[1][0]
  assert len(list((output / shard_scoring.SCORES_DIR).glob("*.json"))) == 4
  assert_same_report(output, one_process)


def test_a_killed_scoring_run_resumes_without_scoring_a_video_twice(
    tmp_path, beam_windows, one_process, listing, classifier_export):
  output = tmp_path / "report"
  scores = output / shard_scoring.SCORES_DIR
  # One window per batch, so that each shard takes a while; killed once a shard is written.
  command = scoring_command(classifier_export, listing, beam_windows, output) + [
      "--batch_size=1"]
  process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not list(scores.glob("*.json")) and process.poll() is None and time.time() < deadline:
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL, stderr[-3000:]
  done = {p.name: p.stat().st_mtime_ns for p in scores.glob("*.json")}
  assert 1 <= len(done) < 4, sorted(done)  # stopped between shards or inside one
  resumed = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # The shards scored before the kill were not scored again; every video once in the report.
  assert {n: (scores / n).stat().st_mtime_ns for n in done} == done
  assert len(list(scores.glob("*.json"))) == 4
  assert_same_report(output, one_process)


def test_window_workers_read_the_videos_from_a_bucket(tmp_path, gcs_bucket, synthetic_corpus,
                                                      bad_videos, classifier_export):
  """--input_uri: the windows are cut from gs:// objects (a Cloud Storage API on 127.0.0.1)
  holding what the directory of --data holds, and equal those cut from the local files; a
  video missing from the bucket is unreadable, not lost."""
  from havic_jax import storage
  folder = tmp_path / "videos"
  folder.mkdir()
  corpus = pathlib.Path(synthetic_corpus) / "FakeAVCeleb"
  video = sorted(corpus.glob("RealVideo-RealAudio/**/*.mp4"))[0]
  names = {"real.mp4": video, "silent.mp4": bad_videos["silent.mp4"]}
  for name, source in names.items():
    (folder / name).write_bytes(source.read_bytes())
  storage.path(f"{gcs_bucket}/videos/real.mp4").write_bytes(video.read_bytes())
  listing = folder / "videos.csv"
  listing.write_text("video_path,overall_label\n" + "".join(f"{folder / n},0\n" for n in names))
  cut = {}
  for where, uri in (("local", ""), ("bucket", f"{gcs_bucket}/videos")):
    windows = tmp_path / where
    evaluate.run(str(classifier_export), str(listing), EvalOptions(
        protocol="all", output="", windows=str(windows), windows_only=True, input_uri=uri))
    manifest = json.loads((windows / window_shards.MANIFEST).read_text())
    cut[where] = {task.video_id: inputs for shard in manifest["shards"]
                  for task, inputs in window_shards.read_shard(str(windows), shard["file"])}
  local, bucket = cut["local"], cut["bucket"]
  real = next(video_id for video_id in local if video_id.endswith("real.mp4"))
  assert local[real].status == bucket[real].status == "ok"
  np.testing.assert_array_equal(local[real].video, bucket[real].video)
  np.testing.assert_array_equal(local[real].audio, bucket[real].audio)
  silent = next(video_id for video_id in local if video_id.endswith("silent.mp4"))
  assert local[silent].status == "no_audio" and bucket[silent].status == "unreadable"
  assert "gs://" in bucket[silent].detail
