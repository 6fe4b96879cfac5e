"""Pretraining export -> fine-tuning (init_from, validation, keep-best) -> eval binary."""

import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import finetune_tiny, pretrain_tiny
from configs.tiny import tiny_model
from havic_jax.data import prepare, synthetic
from havic_jax.checkpoints import exported, loading, runs
from havic_jax.evaluation import evaluate
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax.training import loop
from havic_jax.models.config import model_config_from
from havic_jax.models.havic_models import build_model, example_inputs
from havic_jax.models.havic_models import PRETRAINED_MODULES

TINY = model_config_from(tiny_model())


def _logged(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text()
          .splitlines()]


def _finetune_config(data_path, init_from, num_steps):
  config = finetune_tiny.get_config()
  config.unlock()
  config.num_steps = num_steps
  config.data.source, config.data.path = "prepared", str(data_path)
  config.init_from = str(init_from)
  return config


def test_finetuning_starts_from_the_export_and_keeps_the_best(prepared_corpus, tmp_path):
  params = nn.unbox(build_model(TINY, "pretrain").init(
      jax.random.key(7), *example_inputs(TINY, kept_tokens=True))["params"])
  export = exported.export_params(params, tiny_model(), "pretrain", "reference",
                                 tmp_path / "export")
  config = _finetune_config(prepared_corpus, export, num_steps=3)
  config.optimizer.pretrained_learning_rate = 0.0  # the backbone stays the export's (up to the
  # schedule's 1e-9 floor)
  config.eval_every = 1
  config.data.eval_split = "train"  # both classes, so every AUC is defined
  config.checkpoint.update(every_steps=1, keep=1, keep_best=1)
  workdir = tmp_path / "finetune"
  loop.run(config, str(workdir))

  tuned = loading.load(str(workdir)).params
  for name in PRETRAINED_MODULES:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7), tuned[name],
                 params[name])
  aucs = {r["step"]: r["eval/auc"] for r in _logged(workdir) if "eval/auc" in r}
  assert sorted(aucs) == [1, 2, 3]
  best = runs.best_step(str(workdir))
  assert aucs[best] == max(aucs.values())
  kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert kept == sorted({best, 3})  # the latest plus the best


@pytest.mark.long_run
def test_pretrain_export_finetune_eval_detects_the_synthetic_fakes(tmp_path):
  """The README's path end to end: AUC on the held-out synthetic fakes above 0.9."""
  synthetic.generate_corpus(tmp_path / "videos", 80, seed=1, duration=6.6)
  prepare.prepare("fakeavceleb", str(tmp_path / "videos"), str(tmp_path / "prepared"),
                  workers=2)
  pretrain = pretrain_tiny.get_config()
  pretrain.unlock()
  pretrain.num_steps, pretrain.log_every = 200, 50
  pretrain.data.source, pretrain.data.path = "prepared", str(tmp_path / "prepared")
  loop.run(pretrain, str(tmp_path / "pretrain"))
  params = loading.load(str(tmp_path / "pretrain")).params
  export = exported.export_params(params, pretrain.model, "pretrain", pretrain.compat,
                                 tmp_path / "export")
  config = _finetune_config(tmp_path / "prepared", export, num_steps=600)
  config.log_every, config.eval_every = 50, 100
  loop.run(config, str(tmp_path / "finetune"))
  outcome = evaluate.run(str(tmp_path / "finetune"), str(tmp_path / "videos"), EvalOptions(
      protocol="fakeavceleb_intra", output=str(tmp_path / "eval"), workers=2))
  overall, per_category = outcome["results"]
  assert overall.columns["all"]["auc"] > 0.9, overall.columns
  assert set(per_category.columns) >= {"RVFA", "FVRA-WL", "FVRA-FS", "FVFA-FS", "FVFA-GAN",
                                       "FVFA-WL", "AVG"}
