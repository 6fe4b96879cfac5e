"""Training entry point.

  python -m havic_jax.main --config=configs/pretrain_tiny.py --workdir=/tmp/havic
  python -m havic_jax.main --config=configs/pretrain_base.py --workdir=DIR \
      --config.batch_size=224 --config.mesh.fsdp=8 --multihost

Re-running the same command on a workdir with checkpoints resumes the run. At the end the
command prints a summary: the steps, the last logged losses, where the checkpoints and the
TensorBoard events are, and the command to run next (export for the next stage, or eval). Multi-host:
``--multihost`` alone lets ``jax.distributed.initialize()`` read Cloud TPU or SLURM settings;
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` sets them explicitly
(e.g. several processes on one machine).
"""

from typing import Any, Mapping

from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py); override fields with --config.x=y.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
cli.define_distributed_flags()
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # imported here so --help works without touching devices
  cli.initialize_distributed()
  config = FLAGS.config
  cli.check_paths(
      inputs={"--config.data.path": config.data.path if config.data.source == "prepared" else "",
              **{f"--config.init_from ({path})": path
                 for path in filter(None, config.init_from.split(","))}},
      output_dirs={"--workdir": FLAGS.workdir})
  cli.enable_compilation_cache()
  from havic_jax.data import training_data
  from havic_jax.training import loop
  state, metrics = loop.run(training_data.with_synthetic_corpus(config, FLAGS.workdir),
                            FLAGS.workdir)
  if jax.process_index() == 0:
    print(summary(FLAGS.config, FLAGS.workdir, int(state.step), metrics))


def summary(config: Any, workdir: str, step: int, metrics: Mapping[str, float]) -> str:
  """A finished run in a few lines: steps, the last logging window's losses (and validation),
  the checkpoint and TensorBoard directories, and the next command: the export to fine-tune
  from where the detector has a later stage, else the eval binary."""
  from havic_jax import detectors, storage
  from havic_jax.checkpoints import runs
  from havic_jax.training.hooks import THROUGHPUT
  from havic_jax.training.metric_writer import TENSORBOARD_DIR
  root = storage.path(workdir)
  stages = detectors.info(config).stages
  names = sorted((k for k in metrics if k not in THROUGHPUT), key=lambda k: k != "total")
  logged = ", ".join(f"{k} {metrics[k]:.4g}" for k in names)  # the total loss first
  num_steps = runs.read_config(workdir).num_steps  # as the run derived it
  lines = [f"done: {detectors.detector_name(config)} {config.stage}, step {step} of "
           f"{num_steps}",
           f"  final (last logging window): {logged}",
           f"  checkpoints: {root / runs.CHECKPOINT_DIR}",
           f"  TensorBoard: tensorboard --logdir={root / TENSORBOARD_DIR}"]
  if stages.index(config.stage) + 1 < len(stages):
    lines.append(f"  next: python -m havic_jax.export --workdir={root} --output={root}/export"
                 f", then train the {stages[stages.index(config.stage) + 1]} stage with "
                 f"--config.init_from={root}/export")
  else:
    lines.append(f"  next: python -m havic_jax.eval --checkpoint={root} --data=VIDEOS "
                 f"--output={root}/eval")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
