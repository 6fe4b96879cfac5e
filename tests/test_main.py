"""The command-line entry points, run as a user would."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("module", ["havic_jax.main", "havic_jax.models.summary"])
def test_help(module):
  result = run("-m", module, "--help")
  assert result.returncode == 0, result.stderr
  assert "--config" in result.stdout


def test_main_pretrains_the_tiny_model_on_the_synthetic_corpus(tmp_path):
  result = run("-m", "havic_jax.main", "--config=configs/pretrain_tiny.py",
               f"--workdir={tmp_path}", "--config.num_steps=4", "--config.log_every=2",
               "--config.data.synthetic_videos=4")
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = json.loads((tmp_path / "synthetic_data/prepared/manifest.json").read_text())
  assert manifest["counts"]["clips"] == 4  # generated, prepared, then read by the pipeline
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  for r in records:
    assert np.isfinite(r["total"]) and r["total"] > 0
    assert r["samples_per_second"] > 0
  assert "step 4/4" in result.stdout


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
