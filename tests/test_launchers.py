"""launch/tpu_pod.sh and launch/slurm_gpu.sbatch with ``gcloud``, ``srun`` and ``python``
replaced by scripts that print their command lines: the TPU runtime is installed on every
worker, the SLURM job stops before ``srun`` when JAX sees no GPU, and both start the training
binary with --multihost on the config and workdir given."""

import os
import pathlib
import shlex
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Each fake writes its name and arguments, NUL-terminated, to the next numbered file in
# $CALLS; the fake python answers the GPU check with $FAKE_BACKEND and 8 devices.
FAKE = """#!/usr/bin/env bash
call="$CALLS/$(ls "$CALLS" | wc -l)"
printf '%s\\0' "$(basename "$0")" "$@" > "$call"
if [ "$(basename "$0")" = python ] && [ "$1" = -c ]; then echo "$FAKE_BACKEND 8"; fi
"""


def run_script(tmp_path, script, args, backend="gpu"):
  """(exit status, stderr, [argv of each fake call]) of ``bash script args``."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for name in ("gcloud", "srun", "python"):
    (bin_dir / name).write_text(FAKE)
    (bin_dir / name).chmod(0o755)
  calls = tmp_path / "calls"
  calls.mkdir()
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls),
             FAKE_BACKEND=backend)
  result = subprocess.run(["bash", str(ROOT / "launch" / script)] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  return (result.returncode, result.stderr,
          [(calls / str(i)).read_text().split("\0")[:-1]
           for i in range(len(list(calls.iterdir())))])


def test_tpu_pod_installs_the_tpu_runtime_on_every_worker(tmp_path):
  status, stderr, calls = run_script(tmp_path, "tpu_pod.sh", [
      "my-tpu", "us-east5-a", "gs://bucket/run", "configs/pretrain_base.py",
      "--config.batch_size=4096"])
  assert status == 0, stderr
  [gcloud] = calls
  assert gcloud[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--zone=us-east5-a" in gcloud and "--worker=all" in gcloud
  remote = shlex.split(next(a for a in gcloud if a.startswith("--command=")).split("=", 1)[1])
  install = remote[remote.index("pip"):remote.index("&&", remote.index("pip"))]
  assert install == ["pip", "install", "-q", "-e", ".[tpu]"]
  main = remote[remote.index("python"):]
  assert main == ["python", "-m", "havic_jax.main", "--multihost",
                  "--config=configs/pretrain_base.py", "--workdir=gs://bucket/run",
                  "--config.batch_size=4096"]


def test_slurm_job_checks_for_gpus_then_runs_one_task_per_node(tmp_path):
  status, stderr, calls = run_script(tmp_path, "slurm_gpu.sbatch", [
      "/shared/run", "configs/pretrain_base.py", "--config.mesh.fsdp=8"])
  assert status == 0, stderr
  check, srun = calls
  assert check[:2] == ["python", "-c"] and "jax.default_backend()" in check[2]
  assert srun == ["srun", "python", "-m", "havic_jax.main", "--multihost",
                  "--config=configs/pretrain_base.py", "--workdir=/shared/run",
                  "--config.mesh.fsdp=8"]


def test_slurm_job_without_gpus_stops_before_srun_with_one_line(tmp_path):
  status, stderr, calls = run_script(tmp_path, "slurm_gpu.sbatch", ["/shared/run"],
                                     backend="cpu")
  assert status == 1
  [line] = stderr.strip().splitlines()
  assert line.startswith("error: JAX on ") and "sees no GPU (found: cpu 8)" in line
  assert '.[cuda]' in line
  assert [c[0] for c in calls] == ["python"]  # the check, and no srun
