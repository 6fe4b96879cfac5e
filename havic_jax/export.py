"""Exports a training run's parameters for fine-tuning and users (``havic_jax.checkpoints.exported``).

  python -m havic_jax.export --workdir=PRETRAIN_WORKDIR --output=DIR [--step=N] [--modules=...]
"""

from typing import Sequence

import jax
import numpy as np
from absl import app, flags

from havic_jax import cli
from havic_jax.checkpoints import loading
from havic_jax.checkpoints.exported import export_params
from havic_jax.models.havic_models import PRETRAINED_MODULES

FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(inputs={"--workdir": FLAGS.workdir}, output_dirs={"--output": FLAGS.output})
  checkpoint = loading.load(FLAGS.workdir, step=FLAGS.step)
  if checkpoint.config is None:
    raise app.UsageError(f"--workdir={FLAGS.workdir} is a {checkpoint.description['kind']}, "
                         f"not a training workdir")
  config, params = checkpoint.config, checkpoint.params
  source = {"workdir": checkpoint.description["path"], "step": checkpoint.description["step"]}
  directory = export_params(params, config.model, config.stage, config.compat, FLAGS.output,
                            FLAGS.modules, source)
  count = sum(np.size(leaf) for name in FLAGS.modules for leaf in jax.tree.leaves(params[name]))
  print(f"exported {', '.join(FLAGS.modules)} ({count:,d} parameters, {config.stage} model) "
        f"-> {directory}")


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/ and config.json).")
  flags.DEFINE_string("output", None, "New export directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_list("modules", list(PRETRAINED_MODULES),
                    "Top-level modules to export (default: what fine-tuning loads).")
  flags.mark_flags_as_required(["workdir", "output"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
