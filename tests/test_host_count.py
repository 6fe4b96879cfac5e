"""Host-count invariance of the training loop's real input path: a run on one process with 8
CPU devices and a run on two ``jax.distributed`` processes with 4 each get the same global
batches (the same clips in the same rows, the same masks) and compute the same losses."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from local_services import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 3


def environment():
  """Without the tests' compilation cache (two-process CPU runs hang loading from it), with
  the repository on the path of scripts run from tests/."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  return env


def run_processes(commands):
  """Runs ``commands`` (one per process) at once; asserts each exits 0."""
  processes = [subprocess.Popen(c, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for c in commands]
  for process in processes:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]


def on_processes(count, arguments):
  """One command line per process of a ``count``-process run over 8 CPU devices in all."""
  if count == 1:
    return [arguments + ["--cpu_devices=8"]]
  port = free_port()
  return [arguments + [f"--cpu_devices={8 // count}", f"--coordinator_address=localhost:{port}",
                       f"--num_processes={count}", f"--process_id={i}", "--allow_cpu"]
          for i in range(count)]


def global_batches(tmp_path, prepared, count):
  """{"{step}/{key}": array} of the first global batches of a ``count``-process run."""
  output = tmp_path / f"batches_{count}.npz"
  script = [sys.executable, str(ROOT / "tests" / "global_batches.py"), str(output), str(STEPS),
            str(prepared), str(8 // count)]
  if count == 1:
    run_processes([script])
  else:
    port = free_port()
    run_processes([script + [f"localhost:{port}", str(count), str(i)] for i in range(count)])
  with np.load(output) as arrays:
    return dict(arrays)


@pytest.mark.long_run
def test_one_and_two_processes_get_the_same_global_batches(tmp_path, prepared_corpus):
  one, two = (global_batches(tmp_path, prepared_corpus, count) for count in (1, 2))
  assert sorted(one) == sorted(two)
  assert {k.split("/")[1] for k in one} >= {"video", "audio", "ids_keep_video",
                                            "ids_keep_audio"}
  for key in one:
    np.testing.assert_array_equal(two[key], one[key], err_msg=key)
  # The rows of a batch hold different masks (not one generator per process slot).
  masks = one["0/ids_keep_video"]
  assert len({row.tobytes() for row in masks}) > len(masks) // 2


def losses(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["total"] for r in map(json.loads, lines) if "total" in r}


@pytest.mark.long_run
def test_one_and_two_processes_compute_the_same_losses(tmp_path, prepared_corpus):
  """With drop-path off (the tiny model has no dropout), steps 1-3 give the same loss."""
  runs = {}
  for count in (1, 2):
    workdir = tmp_path / f"run_{count}"
    run_processes(on_processes(count, [
        sys.executable, "-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
        f"--workdir={workdir}", f"--config.num_steps={STEPS}", "--config.log_every=1",
        "--config.data.source=prepared", f"--config.data.path={prepared_corpus}",
        "--config.model.video_drop_path=0.0", "--config.model.video_decoder_drop_path=0.0",
        "--config.image_every=0"]))
    runs[count] = losses(workdir)
  assert sorted(runs[1]) == list(range(1, STEPS + 1))
  for step in runs[1]:
    assert runs[2][step] == pytest.approx(runs[1][step], rel=1e-5), step
