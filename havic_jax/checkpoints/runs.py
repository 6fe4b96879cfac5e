"""Orbax checkpoints of a training run: state, input-pipeline position, config.

``WORKDIR/checkpoints/<step>/`` holds the ``TrainState`` (parameters, optimiser state, step,
RNG) and, when the batches come from Grain, the data iterator's state, so a resumed run reads
the same batches and computes the same numbers. Saves are asynchronous; the manager keeps the
last ``checkpoint.keep`` steps plus the best ``checkpoint.keep_best`` by
``checkpoint.best_metric``. ``WORKDIR/config.json`` records the run's config for exports.
Restoring takes the target shardings of the current mesh, so a checkpoint written on one mesh
loads onto another. ``WORKDIR`` may be a ``gs://`` URI (:mod:`havic_jax.storage`; Orbax writes
the arrays through tensorstore's Cloud Storage driver).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Tuple

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from havic_jax import storage

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
STATE_ITEM, DATA_ITEM = "state", "data"


def make_manager(workdir: str, checkpoint_options: Any) -> ocp.CheckpointManager:
  """The run's manager: async saves; keeps the last ``keep`` and best ``keep_best`` steps.

  checkpoint_options: ``config.checkpoint`` (``keep``, ``keep_best``, ``best_metric``,
  ``best_mode`` "max" or "min")."""
  policies = [checkpoint_managers.LatestN(n=checkpoint_options.keep)]
  tracked = {}
  if checkpoint_options.keep_best and checkpoint_options.best_metric:
    metric = lambda metrics: metrics[checkpoint_options.best_metric]
    policies.append(checkpoint_managers.BestN(
        get_metric_fn=metric, reverse=checkpoint_options.best_mode == "min",
        n=checkpoint_options.keep_best, keep_checkpoints_without_metrics=False))
    # Orbax writes a save's metrics only when best_fn is set (the policies above decide what
    # is kept).
    tracked = {"best_fn": metric, "best_mode": checkpoint_options.best_mode}
  options = ocp.CheckpointManagerOptions(
      preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=True, create=True, **tracked)
  return ocp.CheckpointManager(storage.path(workdir) / CHECKPOINT_DIR, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any = None,
         metrics: Optional[Mapping[str, float]] = None, force: bool = False) -> bool:
  """Starts an asynchronous save of ``state`` (and the Grain iterator's position)."""
  items = {STATE_ITEM: ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items),
                      metrics=dict(metrics) if metrics else None, force=force)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any = None,
            step: Optional[int] = None) -> Tuple[Any, int]:
  """(state, step) from ``step`` (default: the latest). ``abstract_state``: a pytree of
  ``jax.ShapeDtypeStruct`` with the target shardings (the current mesh). The data iterator,
  when given, is moved to the saved position in place."""
  step = manager.latest_step() if step is None else step
  items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE_ITEM], step


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """``WORKDIR/config.json`` (process 0)."""
  if jax.process_index() == 0:
    path = storage.path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))


def has_config(workdir: str) -> bool:
  """Whether ``workdir`` holds a run's ``config.json``."""
  return (storage.path(workdir) / CONFIG_FILE).is_file()


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = storage.path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing; is {workdir} a havic_jax training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def best_step(workdir: str) -> Optional[int]:
  """The step of the best kept checkpoint of a training workdir by its ``checkpoint.best_metric``
  (as the run's ``checkpoint.best_mode`` ranks it), or None when the run tracked no metric or
  none of its kept checkpoints has a finite one (callers then take the latest)."""
  checkpoint_options = read_config(workdir).checkpoint
  if not (checkpoint_options.keep_best and checkpoint_options.best_metric):
    return None
  with make_manager(workdir, checkpoint_options) as manager:
    metrics = {step: manager.metrics(step) for step in manager.all_steps()}
  ranked = [(values[checkpoint_options.best_metric], step) for step, values in metrics.items()
            if values and np.isfinite(values.get(checkpoint_options.best_metric, np.nan))]
  if not ranked:
    return None
  best = min if checkpoint_options.best_mode == "min" else max
  return best(ranked)[1]

