"""Training entry point.

  python -m havic_jax.main --config=configs/pretrain_tiny.py --workdir=/tmp/havic
  python -m havic_jax.main --config=configs/pretrain_base.py --workdir=DIR \
      --config.batch_size=224 --config.mesh.fsdp=8 --multihost
"""

from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py); override fields with --config.x=y.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for metrics (and, later, checkpoints).")
flags.DEFINE_bool("multihost", False,
                  "Call jax.distributed.initialize() (TPU pods, SLURM GPU clusters).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # imported here so --help works without touching devices
  if FLAGS.multihost:
    jax.distributed.initialize()
  from havic_jax import train
  train.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
