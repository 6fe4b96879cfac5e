"""Workdirs, exports and eval reports on Cloud Storage, against a real GCS API (the emulator of
``local_services``): training writes every file of its workdir there, the export command and
``loading.load`` read it back, the eval binary writes its report there; and components that
need local files refuse ``gs://`` URIs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from etils import epath

from configs import pretrain_tiny
from havic_jax.checkpoints import loading, runs
from havic_jax.data import records
from havic_jax.evaluation import evaluate
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax import storage
from havic_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_paths_keep_uris_and_make_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(storage.path("gs://bucket/run/")) == "gs://bucket/run"
  assert storage.path("run") == epath.Path(tmp_path / "run")
  with pytest.raises(ValueError, match="gs://BUCKET/PATH"):
    storage.path("gs:/bucket/run")  # a URI that lost a slash: never a local folder "gs:"
  with pytest.raises(ValueError, match="gcsfuse"):
    records.open_prepared("gs://bucket/prepared")
  assert not (tmp_path / "gs:").exists()


def test_append_text_appends_on_cloud_storage(gcs_bucket, tmp_path):
  for base in (f"{gcs_bucket}/append", tmp_path):
    file = storage.path(base) / "lines.txt"
    storage.append_text(file, "one\n")
    storage.append_text(file, "two\n")
    assert file.read_text() == "one\ntwo\n"


class Interrupted(Exception):
  pass


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_staged_publishes_complete_files_and_nothing_on_an_error(gcs_bucket, tmp_path, where):
  base = storage.path(f"{gcs_bucket}/staged" if where == "bucket" else tmp_path)
  base.mkdir(parents=True, exist_ok=True)
  final = base / "shard.bin"
  with storage.staged(final) as staging:
    assert not storage.is_remote(staging) and staging != final  # a local file, for any writer
    with open(staging, "wb") as file:
      file.write(b"first")
    assert not final.exists()  # readers see nothing until the block ends
  assert final.read_bytes() == b"first"

  with pytest.raises(Interrupted):
    with storage.staged(final) as staging:
      staging.write_bytes(b"half of the second")
      raise Interrupted()
  assert final.read_bytes() == b"first"  # the earlier file stays, the half-written one is gone
  assert not staging.exists()
  missing = base / "never.bin"
  with pytest.raises(Interrupted):
    with storage.staged(missing) as staging:
      staging.write_bytes(b"half")
      raise Interrupted()
  assert not missing.exists()
  assert sorted(p.name for p in base.iterdir()) == ["shard.bin"]  # no staging left beside it


def test_a_training_workdir_on_cloud_storage_exports_and_evaluates(gcs_bucket, prepared_corpus):
  workdir = f"{gcs_bucket}/workdir"
  config = pretrain_tiny.get_config()
  config.unlock()
  config.update(num_steps=2, image_every=2)
  config.data.update(source="prepared", path=str(prepared_corpus))
  loop.run(config, workdir)
  root = storage.path(workdir)
  assert [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()
          ] == [1, 2]
  assert runs.read_config(workdir).num_steps == 2
  assert "video_encoder" in (root / "parameters.txt").read_text()
  assert len(list((root / "images" / "step_00000002").iterdir())) > 0
  parts = list((root / "tensorboard").iterdir())  # one event file per flush
  assert parts and all(p.name.startswith("events.out.tfevents.") and p.stat().length > 0
                       for p in parts)
  params = loading.load(workdir).params

  export_dir = f"{gcs_bucket}/export"
  result = subprocess.run([sys.executable, "-m", "havic_jax.export", f"--workdir={workdir}",
                           f"--output={export_dir}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((storage.path(export_dir) / "config.json").read_text())["source"][
      "workdir"] == workdir
  checkpoint = loading.load(export_dir)
  cfg, loaded = checkpoint.model_config, checkpoint.params
  assert cfg.width == config.model.width
  np.testing.assert_array_equal(loaded["video_encoder"]["block_0"]["mlp"]["fc1"]["kernel"],
                                params["video_encoder"]["block_0"]["mlp"]["fc1"]["kernel"])

  report = f"{gcs_bucket}/report"
  outcome = evaluate.run(export_dir, str(prepared_corpus), EvalOptions(
      protocol="all", output=report, scorer="coherence", batch_size=8))
  assert set(outcome["files"]) == {"json", "markdown", "roc", "pr", "per_video", "per_window"}
  for file in outcome["files"].values():
    assert str(file).startswith(report) and file.stat().length > 0
  summary = json.loads((storage.path(report) / "results.json").read_text())
  assert summary["videos"]["total"] == len(outcome["videos"])
  assert not (ROOT / "gs:").exists()
