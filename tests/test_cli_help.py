"""Every command-line entry point answers --help with its flags and exits 0."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# module -> flags its --help must list
COMMANDS = {
    "havic_jax.main": ("--config", "--workdir"),
    "havic_jax.eval": ("--checkpoint", "--data", "--protocol", "--output", "--scorer"),
    "havic_jax.bench": ("--config", "--mode"),
    "havic_jax.aot": ("--config", "--topology", "--per_chip_batch", "--find_batch", "--output"),
    "havic_jax.compare": ("--detectors", "--data", "--eval_data", "--workdir"),
    "havic_jax.batch_scaling": ("--config", "--workdir", "--batches", "--scalings", "--seeds",
                                "--samples"),
    "havic_jax.export": ("--workdir", "--output", "--step", "--modules"),
    "havic_jax.convert": ("--source", "--input", "--output", "--config"),
    "havic_jax.models.summary": ("--config",),
    "data_pipelines.prepare": ("--dataset", "--input", "--output", "--videos_per_shard",
                               "--runner", "--detect_every"),
    "data_pipelines.synthetic": ("--output", "--videos", "--seed", "--duration"),
    "data_pipelines.bench": ("--videos", "--stages", "--json"),
    "data_pipelines.tfds_builders": ("--dataset",),
}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_lists_the_flags(module):
  result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  missing = [flag for flag in COMMANDS[module] if flag not in result.stdout]
  assert not missing, f"{module} --help lacks {missing}"
