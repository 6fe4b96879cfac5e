"""The command-line entry points, run as a user would."""

import json
import logging
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from havic_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The source files whose INFO lines a command shows by default.
OWN_FILES = {path.name for folder in ("havic_jax", "data_pipelines")
             for path in (ROOT / folder).rglob("*.py")}
# absl's log line prefix: level letter, date, time, thread, file:line.
LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]")


# What libtpu prints when it starts on a host without TPU chips (the tpu extra installs it).
LIBTPU_NOISE = ("Failed to find host bounds for accelerator type", "TPU_WORKER_HOSTNAMES",
                "=== Source Location Trace: ===")


def run(*args, timeout=300, env=None):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env)


def test_main_pretrains_the_tiny_model_on_the_synthetic_corpus(tmp_path):
  """The README's demo, as a user's shell runs it (no JAX_PLATFORMS): a progress line per
  step, a summary, and no start-up noise from libtpu or Grain."""
  user_env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  result = run("-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
               f"--workdir={tmp_path}", "--config.num_steps=4", "--config.log_every=2",
               "--config.data.synthetic_videos=4", "--config.profile.start_step=1",
               "--config.profile.steps=2", env=user_env)
  assert result.returncode == 0, result.stderr[-3000:]
  output = result.stdout + result.stderr
  assert not [line for line in LIBTPU_NOISE if line in output], output[-3000:]
  assert "prefetch_buffer_size" not in output  # Grain's read-ahead defaults are consistent
  manifest = json.loads((tmp_path / "synthetic_data/prepared/manifest.json").read_text())
  assert manifest["counts"]["clips"] == 4  # generated, prepared, then read by the pipeline
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  for r in records:
    assert np.isfinite(r["total"]) and r["total"] > 0
    assert r["samples_per_second"] > 0
    # Chip use: model TFLOP/s per device, and their share of a matmul measured on this CPU.
    assert r["train/tflops_per_device"] > 0 and 0 < r["train/mfu"] < 1
  # One step's model FLOPs and one device's peak, the same in every window.
  step_flops = [r["train/tflops_per_device"] / r["steps_per_second"] for r in records]
  peaks = [r["train/tflops_per_device"] / r["train/mfu"] for r in records]
  assert step_flops[1] == pytest.approx(step_flops[0], rel=1e-6)
  assert peaks[1] == pytest.approx(peaks[0], rel=1e-6) and 1e-3 < peaks[0] < 10  # TFLOP/s
  # The profile of steps 2-3: one trace written by jax.profiler under WORKDIR/profile.
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert "step 4/4" in result.stdout
  info_files = {m.group(2) for m in map(LOG_LINE.match, result.stderr.splitlines())
                if m and m.group(1) == "I"}
  assert info_files and info_files <= OWN_FILES, info_files - OWN_FILES  # no Orbax, absl, JAX
  summary = result.stdout[result.stdout.index("done: havic pretrain, step 4 of 4"):]
  assert "final (last logging window): total " in summary
  assert f"checkpoints: {tmp_path / 'checkpoints'}" in summary
  assert f"tensorboard --logdir={tmp_path / 'tensorboard'}" in summary
  assert f"next: python -m havic_jax.export --workdir={tmp_path}" in summary


def test_library_info_records_need_verbosity():
  own = cli.OwnInfoOnly()
  record = lambda path, level: logging.LogRecord("absl", level, path, 1, "m", (), None)
  assert own.filter(record(str(ROOT / "havic_jax/training/loop.py"), logging.INFO))
  assert not own.filter(record("/site-packages/orbax/checkpoint/manager.py", logging.INFO))
  assert own.filter(record("/site-packages/orbax/checkpoint/manager.py", logging.WARNING))


def test_main_rejects_a_mesh_that_does_not_fit(tmp_path):
  result = run("-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
               f"--workdir={tmp_path}", "--config.mesh.data=3", "--config.data.source=random")
  assert result.returncode != 0
  assert "set config.mesh to match" in result.stderr


def test_summary_prints_the_reconciliation():
  result = run("-m", "havic_jax.models.summary", "--config=configs/pretrain_base.py")
  assert result.returncode == 0, result.stderr
  assert "223,739,780" in result.stdout
  assert "= reference state_dict" in result.stdout and "243,127,940" in result.stdout
