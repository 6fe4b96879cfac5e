"""Mistakes in what a user asks a command for are one line each on stderr, ``error: ...``,
naming the problem, with no traceback and a non-zero exit: an unknown config field (with the
nearest fields), a missing checkpoint, a missing data path, an output that cannot be written.
Every argument is checked before any work, so each problem is reported, not the first one's
consequence."""

import pathlib
import subprocess
import sys

import pytest

from local_services import free_port

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=configs/pretrain_tiny.py"
PORT = free_port()


def cases(tmp):
  """(command, arguments, the text stderr must name) per binary and mistake; outputs go under
  ``tmp``, where ``a_file`` is a regular file, so that nothing can be created under it."""
  missing = "/nonexistent/havic_path"
  unwritable = f"{tmp}/a_file"
  out_dir, out_file = f"{unwritable}/out", f"{unwritable}/out.json"
  W, OUT, O = f"{tmp}/W", f"{tmp}/OUT", f"{tmp}/O"
  return {
      "main unknown field": ("havic_jax.main", [TINY, f"--workdir={W}", "--config.model.widht=8"],
                             "--config.model.widht: configs/pretrain_tiny.py has no field "
                             "'model.widht'; did you mean --config.model.width"),
      "main missing data": ("havic_jax.main", [TINY, f"--workdir={W}", "--config.data.source="
                                               "prepared", f"--config.data.path={missing}"],
                            f"--config.data.path={missing}: no such file or directory"),
      "main missing checkpoint": ("havic_jax.main", [TINY, f"--workdir={W}",
                                                     f"--config.init_from={missing}"],
                                  f"--config.init_from ({missing})={missing}: no such file"),
      "main multihost on CPUs": ("havic_jax.main", [TINY, f"--workdir={W}",
                                                    f"--coordinator_address=localhost:{PORT}",
                                                    "--num_processes=1", "--process_id=0"],
                                 "--multihost: JAX found only CPUs (1 over 1 processes); install "
                                 "the accelerator's JAX"),
      "main unwritable output": ("havic_jax.main", [TINY, f"--workdir={out_dir}"],
                                 f"--workdir: cannot write to {out_dir}"),
      "eval missing checkpoint": ("havic_jax.eval", [f"--checkpoint={missing}", "--data=.",
                                                     f"--output={OUT}"],
                                  f"--checkpoint={missing}: no such file or directory"),
      "eval missing data": ("havic_jax.eval", ["--checkpoint=.", f"--data={missing}",
                                               f"--output={OUT}"],
                            f"--data={missing}: no such file or directory"),
      "eval unwritable output": ("havic_jax.eval", ["--checkpoint=.", "--data=.",
                                                    f"--output={out_dir}"],
                                 f"--output: cannot write to {out_dir}"),
      "export missing checkpoint": ("havic_jax.export", [f"--workdir={missing}", f"--output={O}"],
                                    f"--workdir={missing}: no such file or directory"),
      "export unwritable output": ("havic_jax.export", ["--workdir=.", f"--output={out_dir}"],
                                   f"--output: cannot write to {out_dir}"),
      "convert missing checkpoint": ("havic_jax.convert", ["--source=marlin",
                                                           f"--input={missing}.pth",
                                                           f"--output={O}"],
                                     f"--input={missing}.pth: no such file or directory"),
      "convert unknown field": ("havic_jax.convert", ["--source=marlin", "--input=x.pth",
                                                      f"--output={O}", TINY,
                                                      "--config.compt=paper"],
                                "--config.compt: configs/pretrain_tiny.py has no field 'compt'; "
                                "did you mean --config.compat"),
      "convert unwritable output": ("havic_jax.convert", ["--source=marlin", "--input=.",
                                                          f"--output={out_dir}"],
                                    f"--output: cannot write to {out_dir}"),
      "bench unknown field": ("havic_jax.bench", [TINY, "--config.batch_sise=2"],
                              "--config.batch_sise: configs/pretrain_tiny.py has no field "
                              "'batch_sise'; did you mean --config.batch_size"),
      "bench missing data": ("havic_jax.bench", [TINY, "--data=pipeline",
                                                 "--config.data.source=prepared",
                                                 f"--config.data.path={missing}"],
                             f"--config.data.path={missing}: no such file or directory"),
      "bench unwritable output": ("havic_jax.bench", [TINY, f"--output={out_file}"],
                                  f"--output: cannot write to {unwritable}"),
      "aot unknown field": ("havic_jax.aot", [TINY, "--topology=v5p:2x2x1",
                                              "--config.mesh.fsdb=2"],
                            "--config.mesh.fsdb: configs/pretrain_tiny.py has no field "
                            "'mesh.fsdb'; did you mean --config.mesh.fsdp"),
      "aot unwritable output": ("havic_jax.aot", [TINY, "--topology=v5p:2x2x1",
                                                  f"--output={out_file}"],
                                f"--output: cannot write to {unwritable}"),
      "compare missing data": ("havic_jax.compare", [f"--data={missing}", f"--workdir={W}"],
                               f"--data={missing}: no such file or directory"),
      "compare unwritable output": ("havic_jax.compare", ["--data=.", f"--workdir={out_dir}"],
                                    f"--workdir: cannot write to {out_dir}"),
      "prepare missing data": ("data_pipelines.prepare", ["--dataset=lrs2", f"--input={missing}",
                                                          f"--output={O}"],
                               f"--input={missing}: no such file or directory"),
      "prepare unwritable output": ("data_pipelines.prepare", ["--dataset=lrs2", "--input=.",
                                                               f"--output={out_dir}"],
                                    f"--output: cannot write to {out_dir}"),
  }


CASES = sorted(cases("U"))


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_is_one_line_naming_it(case, tmp_path):
  (tmp_path / "a_file").write_text("")
  command, args, named = cases(tmp_path)[case]
  result = subprocess.run([sys.executable, "-m", command, *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert lines and all(line.startswith("error: ") for line in lines), result.stderr[-2000:]
  assert any(named in line for line in lines), (named, lines)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing was written


def test_verbose_keeps_the_traceback(tmp_path):
  result = subprocess.run([sys.executable, "-m", "havic_jax.export", "--workdir=/nonexistent",
                           f"--output={tmp_path}/o", "--verbose"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0 and "Traceback" in result.stderr
