"""The input bench's eval-at-scale stage (``data_pipelines.bench --eval_shards``): window shards
cut by the local runner and the Beam DirectRunner, read back and scored, with positive rates in
its JSON; its Beam options and its model of the scorer's batch padding."""

import json
import pathlib
import subprocess
import sys

import pytest

from data_pipelines import bench_eval

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_eval_shards_stage_reports_positive_rates(tmp_path, synthetic_corpus):
  real = sorted(pathlib.Path(synthetic_corpus).glob("FakeAVCeleb/RealVideo-RealAudio/**/*.mp4"))
  listing = tmp_path / "videos.csv"
  listing.write_text("video_path,overall_label\n" + "".join(f"{p},0\n" for p in real[:2]))
  output = tmp_path / "bench.json"
  subprocess.run([sys.executable, "-m", "data_pipelines.bench", "--eval_shards",
                  f"--eval_data={listing}", "--shard_runs=local:0,beam:1", "--shard_models=tiny",
                  "--score_seconds=0", "--runners=", "--batches=0", f"--json={output}"],
                 cwd=ROOT, check=True, timeout=300)
  results = json.loads(output.read_text())
  cuts = [r for r in results if r["stage"] == "window_shards"]
  assert [r["run"] for r in cuts] == ["local:0", "beam:1"]
  for cut in cuts:
    assert cut["videos"] == 2 and cut["windows"] == 4  # 3.5 s: windows at 0 and 0.4 s
    assert cut["windows_per_second"] > 0 and cut["windows_per_cpu_second"] > 0
    assert cut["bytes_per_window"] > 0 and sum(cut["statuses"].values()) == 2
  [read] = [r for r in results if r["stage"] == "shard_read"]
  assert read["windows"] == 4 and read["windows_per_cpu_second"] > 0
  [scoring] = [r for r in results if r["stage"] == "scoring"]
  assert scoring["model"] == "tiny" and scoring["windows"] > 0
  assert scoring["windows_per_second_per_device"] > 0 and scoring["windows_per_cpu_second"] > 0
  assert scoring["gflop_per_window"] > 0 and 0 < scoring["batch_fill"] <= 1


def test_shard_runs_name_the_runner_and_its_workers():
  assert bench_eval.shard_run("local:2") == ("local", 2, "")
  assert bench_eval.shard_run("beam:1")[2] == ("--runner=DirectRunner --direct_num_workers=1 "
                                               "--direct_running_mode=in_memory")
  assert "multi_processing" in bench_eval.shard_run("beam:2")[2]
  with pytest.raises(ValueError):
    bench_eval.shard_run("flink:2")


def test_batch_fill_follows_the_scorers_flushes():
  # 18-window videos: batches of 9 are full; batch 32 scores two videos (36) in 64 rows.
  assert bench_eval.batch_fill([[18, 18, 18]], 9) == 1.0
  assert bench_eval.batch_fill([[18, 18]], 32) == pytest.approx(36 / 64)
  # A shard's last videos are scored at its end: 18 + 18 (of 64 rows) and 18 (of 32).
  assert bench_eval.batch_fill([[18, 18, 18]], 32) == pytest.approx(54 / 96)
