"""The detector comparison command: recipes run in order from each other's workdirs, its table
restates the eval binary's per-video scores, and a second run resumes instead of retraining."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from havic_jax import compare

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _compare(*args):
  return subprocess.run([sys.executable, "-m", "havic_jax.compare", *args], capture_output=True,
                        text=True, timeout=600, cwd=ROOT)


TINY = f"{ROOT}/configs/{{detector}}.py:size=tiny"


def test_recipe_configs_train_on_the_train_split():
  configs = compare.recipe_configs("voice_face", TINY, "/data", {"pretrain": 7}, 50)
  assert [name for name, _ in configs] == [
      f"{ROOT}/configs/voice_face.py:size=tiny,stage=pretrain",
      f"{ROOT}/configs/voice_face.py:size=tiny,stage=finetune"]
  pretrain, finetune = (c for _, c in configs)
  assert (pretrain.num_steps, pretrain.log_every, pretrain.data.real_only) == (7, 7, True)
  assert finetune.num_steps == 20 and not finetune.data.real_only  # the config's own length
  assert {c.data.split for _, c in configs} == {"train"}
  assert {c.data.path for _, c in configs} == {"/data"}
  with pytest.raises(ValueError, match="size must be one of"):
    compare.recipe_configs("fakeout", TINY.replace("tiny", "huge"), "/data", {}, 50)
  with pytest.raises(ValueError, match="no config file there"):
    compare.recipe_configs("fakeout", "/nowhere/{detector}.py", "/data", {}, 50)
  with pytest.raises(ValueError, match="trains detector 'havic', not 'fakeout'"):
    compare.recipe_configs("fakeout", f"{ROOT}/configs/havic.py:size=tiny", "/data", {}, 50)


def test_every_detector_trains_its_stages_at_every_size():
  """The stages come from the detector registry; every detector has a base-size config."""
  from havic_jax import detectors
  for size in ("tiny", "base"):
    for name, detector in detectors.DETECTORS.items():
      configs = compare.recipe_configs(name, TINY.replace("tiny", size), "/data", {}, 50)
      assert [c.stage for _, c in configs] == list(detector.stages)
      assert {c.detector.name for _, c in configs} == {name}
  assert compare.stage_spelling("c/{detector}.py", "fakeout", "finetune") == (
      "c/fakeout.py:stage=finetune")


def test_table_shows_dashes_where_a_detector_has_no_metric():
  rows = [{"detector": "a", "stages": [{"config": "x_tiny", "steps": 3, "seconds": 1.2}],
           "overall": {"all": {"ap": 0.5, "auc": 0.25}}, "categories": {"RVFA": 0.5}},
          {"detector": "b", "stages": [{"config": "y_tiny", "steps": 3, "seconds": None}],
           "overall": {"all": {"acc": 1.0, "ap": 1.0, "auc": 1.0}},
           "categories": {"FVFA-WL": 1.0}}]
  lines = compare.comparison_markdown(rows, "all", "d").splitlines()
  assert lines[2] == "| detector | training (steps, s) | AUC | AP | ACC | AUC RVFA | AUC FVFA-WL |"
  assert lines[4] == "| a | x_tiny 3 (1 s) | 25.00 | 50.00 | – | 50.00 | – |"
  assert lines[5] == "| b | y_tiny 3 (done before) | 100.00 | 100.00 | 100.00 | – | 100.00 |"


def test_two_stage_recipe_runs_in_order_and_is_scored(prepared_corpus, tmp_path):
  """Voice–face matching: pretraining, then fine-tuning from its workdir."""
  args = ("--detectors=voice_face", f"--data={prepared_corpus}", f"--workdir={tmp_path}",
          "--pretrain_steps=1", "--finetune_steps=1", "--protocol=all")
  result = _compare(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  finetune = json.loads((tmp_path / "voice_face/finetune/config.json").read_text())
  assert finetune["init_from"] == str(tmp_path / "voice_face/pretrain")
  pretrain = json.loads((tmp_path / "voice_face/pretrain/config.json").read_text())
  assert pretrain["data"]["real_only"] and pretrain["data"]["split"] == "train"
  row = json.loads((tmp_path / "comparison.json").read_text())["rows"][0]
  assert [(s["config"], s["steps"]) for s in row["stages"]] == [
      ("configs/voice_face.py:size=tiny,stage=pretrain", 1),
      ("configs/voice_face.py:size=tiny,stage=finetune", 1)]
  with open(tmp_path / "voice_face/eval/per_video.csv") as f:
    scored = [r for r in csv.DictReader(f) if r["score"]]
  labels = np.array([int(r["label"]) for r in scored])
  scores = np.array([float(r["score"]) for r in scored])
  overall = row["overall"]["all"]
  assert overall["auc"] == pytest.approx(roc_auc_score(labels, scores))
  assert overall["ap"] == pytest.approx(average_precision_score(labels, scores))
  assert "| voice_face | configs/voice_face.py:size=tiny,stage=pretrain 1 (" in result.stdout
  again = _compare(*args)  # both stages are complete: nothing retrains, the table is the same
  assert again.returncode == 0, again.stderr[-3000:]
  row_again = json.loads((tmp_path / "comparison.json").read_text())["rows"][0]
  assert [s["seconds"] for s in row_again["stages"]] == [None, None]
  assert row_again["overall"] == row["overall"]
