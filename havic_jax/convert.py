"""Converts a released PyTorch checkpoint into an export (``havic_jax.checkpoints.released``).

  python -m havic_jax.convert --source=havic_pretrain --input=FILE.pth --output=DIR \\
      [--config=configs/pretrain_base.py]
"""

import dataclasses
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli
from havic_jax.checkpoints.released import RELEASE_COMPAT, SOURCES, convert, summary
from havic_jax.models.config import model_config_from

FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(inputs={"--input": FLAGS.input}, output_dirs={"--output": FLAGS.output})
  if FLAGS.config:
    model, compat = FLAGS.config.model, FLAGS.config.compat
  else:
    model, compat = dataclasses.asdict(model_config_from({}, RELEASE_COMPAT)), RELEASE_COMPAT
  report = convert(FLAGS.source, FLAGS.input, FLAGS.output, model, compat)
  print(summary(report, FLAGS.output))


def define_flags() -> None:
  flags.DEFINE_enum("source", None, list(SOURCES), "What --input holds (spec §10, §11).")
  flags.DEFINE_string("input", None, "State_dict file: .pth/.pt/.ckpt/.bin (PyTorch), "
                                     ".safetensors or .npz.")
  flags.DEFINE_string("output", None, "New directory for the export and report.json.")
  config_flags.DEFINE_config_file(
      "config", None, "Config whose model sizes and compat to convert for (configs/*.py); "
      "default: the paper's base model with the release's token order, as released.")
  flags.mark_flags_as_required(["source", "input", "output"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
