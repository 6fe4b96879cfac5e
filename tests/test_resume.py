"""Runs that survive kills: SIGTERM and SIGKILL mid-run, resume, and the same numbers as an
uninterrupted run, in a local workdir and in a ``gs://`` one (a Cloud Storage emulator);
restore onto another mesh."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import shutil

import jax
import numpy as np
import pytest

from configs import pretrain_tiny
from havic_jax.checkpoints import loading, runs
from havic_jax import sharding, storage
from havic_jax.training import builder, loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8


def command(workdir, prepared):
  return [sys.executable, "-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
          f"--workdir={workdir}", f"--config.num_steps={STEPS}", "--config.log_every=1",
          "--config.checkpoint.every_steps=2", "--config.data.source=prepared",
          f"--config.data.path={prepared}"]


def logged(workdir):
  path = storage.path(workdir) / "metrics.jsonl"
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def run_until(workdir, prepared, step, sig):
  """Starts a run, sends ``sig`` once ``step`` is logged, waits; returns the exit code."""
  process = subprocess.Popen(command(workdir, prepared), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 400
  while not any(r["step"] >= step for r in logged(workdir)):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.2)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=300)
  return process.returncode, stderr


def losses_by_step(workdir):
  """{step: total loss} of the last run that logged each step."""
  return {r["step"]: r["total"] for r in logged(workdir)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared_corpus):
  """(workdir, {step: total loss}) of a run that nothing stopped."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = subprocess.run(command(workdir, prepared_corpus), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = losses_by_step(workdir)
  assert sorted(expected) == list(range(1, STEPS + 1))
  return workdir, expected


@pytest.mark.long_run
@pytest.mark.parametrize("where", ["local", "gcs"])
def test_sigterm_and_sigkill_resume_with_the_same_numbers(where, uninterrupted, request,
                                                          tmp_path, prepared_corpus):
  reference, expected = uninterrupted
  interrupted = (tmp_path / "interrupted" if where == "local"
                 else f"{request.getfixturevalue('gcs_bucket')}/interrupted")
  code, stderr = run_until(interrupted, prepared_corpus, 3, signal.SIGTERM)
  assert code == 0, stderr[-3000:]  # preemption: checkpoint, then a clean exit
  assert "SIGTERM" in stderr
  stopped = max(r["step"] for r in logged(interrupted))
  assert stopped < STEPS
  with runs.make_manager(str(interrupted), train_config().checkpoint) as manager:
    assert manager.latest_step() == stopped  # saved exactly where it stopped
  code, _ = run_until(interrupted, prepared_corpus, stopped + 2, signal.SIGKILL)
  assert code == -signal.SIGKILL
  result = subprocess.run(command(interrupted, prepared_corpus), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from {storage.path(interrupted)}" in result.stderr
  got = losses_by_step(interrupted)
  # The log holds every step once, in order: a resumed run drops the lines its predecessor
  # wrote after the checkpoint it resumes from.
  assert [r["step"] for r in logged(interrupted)] == list(range(1, STEPS + 1))
  assert got == expected  # bitwise: the same float32 losses at every step
  params_a = loading.load(str(reference)).params
  params_b = loading.load(str(interrupted)).params
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  assert not (ROOT / "gs:").exists()  # a gs:// workdir never became a local folder


def train_config(**changes):
  config = pretrain_tiny.get_config()
  config.unlock()
  config.data.source = "random"
  config.log_every = 1
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.mark.long_run
def test_restore_onto_another_mesh(tmp_path):
  """Saved on 8 data-parallel devices, restored with fsdp 4 × data 2: the same state, and the
  loss of the next step (its batch and key) equals the one the original mesh logged."""
  workdir, continued = tmp_path / "run", tmp_path / "continued"
  loop.run(train_config(num_steps=2), str(workdir))
  shutil.copytree(workdir, continued)
  # Step 3 on 8 × data: the copied run is extended, so its schedule is derived anew.
  _, logged_metrics = loop.run(train_config(num_steps=3, reschedule=True), str(continued))
  config = train_config(**{"num_steps": 3, "mesh.data": 2, "mesh.fsdp": 4})
  training = builder.build(config, sharding.make_mesh(config.mesh))
  with training.scope():
    with runs.make_manager(str(workdir), config.checkpoint) as manager:
      restored, step = runs.restore(manager, training.abstract_state())
    assert step == 2
    kernel = restored.params["video_encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.spec[0] == "fsdp" and kernel.addressable_shards[0].data.shape[0] == 16
    saved = loading.load(str(workdir)).params
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), saved)
    batch = next(training.random_batches(config.batch_size, start_step=2))
    key = jax.random.fold_in(restored.rng, restored.step)
    loss, _ = jax.jit(training.loss_fn)(restored.params, training.global_batch(batch), key)
  assert abs(float(loss) - logged_metrics["total"]) < 1e-5
