"""Training entry point.

  python -m havic_jax.main --config=configs/pretrain_tiny.py --workdir=/tmp/havic
  python -m havic_jax.main --config=configs/pretrain_base.py --workdir=DIR \
      --config.batch_size=224 --config.mesh.fsdp=8 --multihost

Re-running the same command on a workdir with checkpoints resumes the run. Multi-host:
``--multihost`` alone lets ``jax.distributed.initialize()`` read Cloud TPU or SLURM settings;
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` sets them explicitly
(e.g. several processes on one machine).
"""

from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py); override fields with --config.x=y.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
flags.DEFINE_bool("multihost", False,
                  "Call jax.distributed.initialize() (TPU pods, SLURM GPU clusters).")
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0 for jax.distributed (implies --multihost).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_integer("cpu_devices", None,
                     "Simulate this many CPU devices per process (testing meshes without "
                     "accelerators).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # imported here so --help works without touching devices
  if FLAGS.cpu_devices:
    jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.multihost:
    jax.distributed.initialize()
  from havic_jax.training import loop
  loop.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
