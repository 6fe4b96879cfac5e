"""Writes the first global batches of the training loop's input path on this process's
mesh: ``python tests/global_batches.py OUT.npz STEPS PREPARED CPU_DEVICES [COORDINATOR
NUM_PROCESSES PROCESS_ID]``.

The batches come from ``loop.training_iterator`` on ``sharding.make_mesh``, made global by
``sharding.global_batch`` (``jax.make_array_from_process_local_data``) and gathered to every
process; process 0 writes them, key ``{step}/{name}``."""

import sys

import jax
import numpy as np


def main(output, steps, prepared, cpu_devices, *distributed):
  jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  if distributed:
    coordinator, count, index = distributed
    jax.distributed.initialize(coordinator, int(count), int(index))
  from jax.experimental import multihost_utils

  from configs import pretrain_tiny
  from havic_jax import sharding
  from havic_jax.data import records
  from havic_jax.models.config import model_config_from
  from havic_jax.training import loop
  config = pretrain_tiny.get_config()
  config.data.source, config.data.path = "prepared", prepared
  mesh = sharding.make_mesh(config.mesh)
  cfg = model_config_from(config.model, config.compat)
  iterator = loop.training_iterator(records.open_prepared(prepared), config, cfg, mesh)
  arrays = {}
  for step in range(int(steps)):
    batch = sharding.global_batch(next(iterator), mesh, config.mesh.batch_axes)
    for name, value in batch.items():
      arrays[f"{step}/{name}"] = np.asarray(multihost_utils.process_allgather(value, tiled=True))
  if jax.process_index() == 0:
    np.savez(output, **arrays)


if __name__ == "__main__":
  main(*sys.argv[1:])
