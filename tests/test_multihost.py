"""The multi-host code path for real: two processes joined by jax.distributed on localhost
(2 CPU devices each) train the tiny model on per-process data shards and write one checkpoint."""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from havic_jax import checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.long_run
def test_two_processes_train_and_write_one_checkpoint(tmp_path, prepared_corpus):
  workdir, port = tmp_path / "run", free_port()
  processes = [subprocess.Popen(
      [sys.executable, "-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
       f"--workdir={workdir}", "--config.num_steps=4", "--config.log_every=2",
       "--config.checkpoint.every_steps=2", "--config.data.source=prepared",
       f"--config.data.path={prepared_corpus}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}", "--cpu_devices=2"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  # Process 0 alone reports: one progress line per logged step, one metrics file.
  assert "step 4/4" in outputs[0][0] and "step 4/4" not in outputs[1][0]
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4] and all(np.isfinite(r["total"]) for r in records)
  # One checkpoint per saved step, holding the global state and each process's data position.
  steps = sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == ["2", "4"]
  data_states = sorted(p.name for p in (workdir / "checkpoints/4/data").glob("process_*"))
  assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]
  positions = [json.loads((workdir / "checkpoints/4/data" / name).read_text())
               for name in data_states]
  assert positions == [{"next_index": 4}] * 2  # each process read 4 batches of its shard
  config, params = checkpoints.load_params(str(workdir))
  assert config.num_steps == 4
  _, first = checkpoints.load_params(str(workdir), step=2)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params, first)
  assert max(jax.tree.leaves(moved)) > 0  # the two saved steps differ: it trained
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
