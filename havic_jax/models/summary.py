"""Parameter count of a config, reconciled with the released checkpoint's tensors.

  python -m havic_jax.models.summary --config=configs/pretrain_base.py

Nothing is allocated: shapes come from ``jax.eval_shape``. Our trainable parameters plus the
fixed sin-cos tables the release stores (we recompute them) plus the tensors the release holds
but never reads (spec §10) must equal the release's state_dict size.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import flax.linen as nn
import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.havic_models import havic_params
from havic_jax.models.reference import reference_rules


def reconciliation(model_config: ModelConfig, kind: str) -> Dict[str, object]:
  """Counts per top-level module and the reconciliation with the reference state_dict (in the
  per-layer layout, which holds the same numbers as the scanned one)."""
  params = nn.unbox(havic_params(dataclasses.replace(model_config, scan_layers=False), kind))
  size = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  rules = reference_rules(model_config, kind)
  shapes = {tuple(k.key for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  mapped = sum(int(np.prod(r.reference_shape(shapes[r.path]))) for r in rules.rules)
  fixed = sum(t.exact.size for t in rules.fixed.values())
  unused = sum(t.size for t in rules.unused.values())
  return {
      "modules": {name: size(tree) for name, tree in params.items()},
      "trainable": size(params),
      "fixed_tables": fixed, "fixed_tensors": len(rules.fixed),
      "unused": unused, "unused_tensors": len(rules.unused),
      "mapped": mapped, "mapped_tensors": len(rules.rules),
      "reference_total": mapped + fixed + unused,
      "reference_tensors": len(rules.rules) + len(rules.fixed) + len(rules.unused),
  }


def format_table(counts: Dict[str, object], title: str) -> str:
  rows = [title, "", f"{'module':40s} {'parameters':>14s}"]
  rows += [f"{name:40s} {n:>14,d}" for name, n in counts["modules"].items()]
  rows += [
      "",
      f"{'our trainable parameters':40s} {counts['trainable']:>14,d}",
      f"{'+ fixed sin-cos tables (recomputed)':40s} {counts['fixed_tables']:>14,d}"
      f"   ({counts['fixed_tensors']} tensors)",
      f"{'+ held by the release, unused by design':40s} {counts['unused']:>14,d}"
      f"   ({counts['unused_tensors']} tensors)",
      f"{'= reference state_dict':40s} {counts['reference_total']:>14,d}"
      f"   ({counts['reference_tensors']} tensors)",
  ]
  if counts["mapped"] != counts["trainable"]:
    rows.append(f"MISMATCH: mapped reference tensors hold {counts['mapped']:,d} numbers")
  return "\n".join(rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  model_config = model_config_from(config.model, config.compat)
  counts = reconciliation(model_config, config.stage)
  path = config_flags.get_config_filename(FLAGS["config"])
  print(format_table(counts, f"HAVIC {config.stage} model ({path})"))


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
  flags.mark_flags_as_required(["config"])
  cli.run(main)
