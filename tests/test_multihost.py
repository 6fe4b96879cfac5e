"""The multi-host code path for real: two processes joined by jax.distributed on localhost
(2 CPU devices each) train the tiny model on per-process data shards and write one checkpoint;
SIGTERM to one of them makes both save the same step and exit 0, and the resumed run computes
what the uninterrupted one did."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from havic_jax.checkpoints import loading
from local_services import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8


def start(workdir, prepared, every_steps):
  """The two processes of one run (log every step, checkpoint every ``every_steps``)."""
  port = free_port()
  # Without the tests' persistent compilation cache: a two-process CPU run whose processes
  # load the step from it hangs or aborts in its first collective.
  environment = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  return [subprocess.Popen(
      [sys.executable, "-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
       f"--workdir={workdir}", f"--config.num_steps={STEPS}", "--config.log_every=1",
       f"--config.checkpoint.every_steps={every_steps}", "--config.data.source=prepared",
       f"--config.data.path={prepared}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}", "--cpu_devices=2", "--allow_cpu"],
      cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]


def finish(processes):
  """Waits for both processes; asserts they exit 0; returns their (stdout, stderr)."""
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  return outputs


def logged(workdir):
  """{step: total loss} of metrics.jsonl (written by process 0 alone)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  lines = path.read_text().splitlines() if path.is_file() else []
  lines = [line for line in lines if line.endswith("}")]  # not a line being written
  return {r["step"]: r["total"] for r in map(json.loads, lines)}


def saved_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def data_positions(workdir, step):
  directory = workdir / "checkpoints" / str(step) / "data"
  return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("process_*"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared_corpus):
  """(workdir, [(stdout, stderr)] of processes 0 and 1) of a run that nothing stopped,
  checkpointing every 2 steps."""
  workdir = tmp_path_factory.mktemp("multihost") / "run"
  return workdir, finish(start(workdir, prepared_corpus, every_steps=2))


@pytest.mark.long_run
def test_two_processes_train_and_write_one_checkpoint(uninterrupted):
  workdir, outputs = uninterrupted
  # Process 0 alone reports: one progress line per logged step, one metrics file.
  assert f"step {STEPS}/{STEPS}" in outputs[0][0] and f"step {STEPS}/{STEPS}" not in outputs[1][0]
  assert sorted(logged(workdir)) == list(range(1, STEPS + 1))
  # One checkpoint per saved step (the last 2 kept), holding the global state and each
  # process's data position.
  assert saved_steps(workdir) == [STEPS - 2, STEPS]
  positions = data_positions(workdir, STEPS)
  assert sorted(positions) == ["process_0-of-2.json", "process_1-of-2.json"]
  # each process read STEPS batches of its shard
  assert list(positions.values()) == [{"next_index": STEPS}] * 2
  checkpoint = loading.load(str(workdir))
  config, params = checkpoint.config, checkpoint.params
  assert config.num_steps == STEPS
  first = loading.load(str(workdir), step=STEPS - 2).params
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params, first)
  assert max(jax.tree.leaves(moved)) > 0  # the two saved steps differ: it trained
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.long_run
def test_sigterm_to_one_process_saves_one_step_on_both(uninterrupted, tmp_path,
                                                       prepared_corpus):
  reference, _ = uninterrupted
  workdir = tmp_path / "run"
  # No periodic save before the end: the preemption's is the only checkpoint.
  processes = start(workdir, prepared_corpus, every_steps=STEPS)
  deadline = time.time() + 400
  while not logged(workdir):
    exited = [p for p in processes if p.poll() is not None]
    assert not exited, exited[0].stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)
  processes[1].send_signal(signal.SIGTERM)  # process 1 only
  outputs = finish(processes)
  stopped = max(logged(workdir))
  assert stopped < STEPS
  for _, stderr in outputs:
    assert f"stopped at step {stopped} after a preemption notice" in stderr
  assert saved_steps(workdir) == [stopped]
  assert list(data_positions(workdir, stopped).values()) == [{"next_index": stopped}] * 2

  finish(start(workdir, prepared_corpus, every_steps=STEPS))
  assert logged(workdir) == logged(reference)  # every step's loss, bitwise
  expected = loading.load(str(reference)).params
  params = loading.load(str(workdir)).params
  jax.tree.map(np.testing.assert_array_equal, params, expected)
