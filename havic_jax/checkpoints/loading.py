"""Parameters from any checkpoint source, in one call.

  load(SOURCE[, model_config][, step])
      -> Checkpoint(model_config, stage, params, description, config)

A source is a training workdir (``WORKDIR/checkpoints/<step>/``, :mod:`.runs`), an export
directory (``python -m havic_jax.export`` / ``convert``, :mod:`.exported`) or a released
state_dict file (HAVIC, MARLIN or AudioMAE: ``.pth``, ``.safetensors``, ``.npz``, converted in
memory, :mod:`.released`). The training loop's ``init_from`` (several sources, each giving other
modules: :func:`load_modules`), the eval binary and the export binary read parameters here.
Parameters come back as nested NumPy arrays on the host, whatever mesh wrote them, in the
layout of the returned ``model_config`` (``models.stacking``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from safetensors.numpy import load as load_safetensors

from havic_jax.errors import UserError
from havic_jax import detectors, storage
from havic_jax.checkpoints import exported, released, runs
from havic_jax.models import stacking
from havic_jax.models.config import ModelConfig, model_config_from

# ``step`` of a training workdir: its best kept checkpoint by the run's
# ``checkpoint.best_metric`` (the latest where the run kept none).
BEST = "best"


class CheckpointError(UserError):
  """A source that is no checkpoint, or not one of the kinds the caller takes."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Parameters and what they belong to. stage: "pretrain" or "finetune" (the model the
  parameters are of); description: where they come from (kind, path, step or source), for
  reports; config: the training config of a workdir (None otherwise), which names the
  detector."""

  model_config: ModelConfig
  stage: str
  params: Mapping[str, Any]
  description: Dict[str, Any]
  config: Optional[ml_collections.ConfigDict] = None

  @property
  def detector(self) -> str:
    return detectors.HAVIC if self.config is None else detectors.detector_name(self.config)

  @property
  def has_classifier(self) -> bool:
    """Whether the checkpoint scores videos itself: its detector's stage gives a fake logit
    (it is not in ``unscored_stages``) and every parameter of that stage's model is present."""
    if self.stage in detectors.DETECTORS[self.detector].unscored_stages:
      return False
    present = traverse_util.flatten_dict(self.params)
    return all(path in present for path in detectors.param_paths(
        self.model_config, self.detector, self.stage, detectors.options_of(self.config)))


def numpy_tree(path: Any, item: Optional[str] = None) -> Any:
  """The Orbax PyTree checkpoint at ``path`` as NumPy arrays on the host (only its top-level
  ``item`` when given), whatever mesh wrote it."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    if item is not None:
      tree = {item: tree[item]}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=tree, restore_args=restore_args, partial_restore=item is not None))
  return restored if item is None else restored[item]


def load(source: str,
         model_config: Optional[ModelConfig] = None,
         step: Union[int, str, None] = None,
         releases: Sequence[str] = released.SOURCES) -> Checkpoint:
  """The parameters of ``source``: a training workdir, an export directory or a released
  state_dict file.

  Args:
    source: a local path or a ``gs://`` URI (released files: local).
    model_config: the model sizes a released file is converted for (default: the release's base
      model); workdirs and exports carry their own.
    step: a workdir's checkpoint step, or :data:`BEST` (default: the latest).
    releases: the released layouts (``released.SOURCES``) accepted; a file of another is a
      :class:`CheckpointError`.
  """
  if released.is_released_file(source):
    return _released(source, model_config, releases)
  directory = storage.path(source)
  if (directory / runs.CHECKPOINT_DIR).is_dir():
    return _workdir(source, step)
  if (directory / exported.CONFIG_FILE).is_file():
    return _export(source)
  raise CheckpointError(f"{source}: neither a training workdir (with {runs.CHECKPOINT_DIR}/), "
                        f"an export directory (with {exported.CONFIG_FILE}) nor a released "
                        f"state_dict file ({', '.join(released.RELEASED_SUFFIXES)}); pass one "
                        f"of those")


def load_pretrained(source: str) -> Tuple[ModelConfig, Mapping[str, Any]]:
  """(model sizes, parameters) of ``source`` (an export directory, a training workdir or a
  released state_dict file, as :func:`load` reads it): the entry point for downstream
  fine-tuning, ``model_config, params = havic_jax.load_pretrained(DIR)``."""
  checkpoint = load(source)
  return checkpoint.model_config, checkpoint.params


def _released(path: str, model_config: Optional[ModelConfig],
              releases: Sequence[str]) -> Checkpoint:
  try:
    converted = released.load_released(path, model_config, sources=releases)
  except released.LayoutError as error:
    raise CheckpointError(f"{error} (HAVIC state_dicts are scored and fine-tuned; MARLIN and "
                          f"AudioMAE ones initialise training: --config.init_from={path})"
                          ) from error
  report = converted.report
  logging.info("%s:\n%s", path, released.summary(report))
  description = {"kind": "released", "path": report["input"], "source": converted.source,
                 "keys": {status: len(report[status])
                          for status in ("loaded", "recomputed", "unused")},
                 "fixed_tables": report["fixed_tables"]}
  return Checkpoint(converted.model_config, converted.stage, converted.params, description)


def _workdir(workdir: str, step: Union[int, str, None]) -> Checkpoint:
  config = runs.read_config(workdir)
  if step == BEST:
    step = runs.best_step(workdir)
  directory = storage.path(workdir) / runs.CHECKPOINT_DIR
  steps = sorted(int(p.name) for p in directory.iterdir()
                 if p.name.isdigit() and (p / runs.STATE_ITEM).is_dir()
                 and ocp.step.is_path_finalized(p))  # gs://: a save's commit file is there
  if not steps:
    raise FileNotFoundError(f"{directory}: no checkpoint; train with --workdir={workdir} first")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"{directory}: no checkpoint of step {step}; there are {steps}")
  params = numpy_tree(directory / str(steps[-1] if step is None else step) / runs.STATE_ITEM,
                      "params")
  return Checkpoint(model_config_from(config.model, config.compat), config.stage, params,
                    {"kind": "workdir", "path": str(storage.path(workdir)),
                     "step": "latest" if step is None else int(step),
                     "detector": detectors.detector_name(config)}, config)


def _export(path: str) -> Checkpoint:
  directory = storage.path(path)
  description = exported.read_export_config(path)
  model_config = model_config_from(description["model"], description["compat"])
  if (directory / exported.ORBAX_DIR).is_dir():
    params = numpy_tree(directory / exported.ORBAX_DIR)
  elif (directory / exported.SAFETENSORS_FILE).is_file():
    params = traverse_util.unflatten_dict(
        load_safetensors((directory / exported.SAFETENSORS_FILE).read_bytes()),
        sep=exported.PATH_SEPARATOR)
  else:
    raise FileNotFoundError(f"{directory}: neither {exported.ORBAX_DIR}/ nor "
                            f"{exported.SAFETENSORS_FILE}; re-export it")
  return Checkpoint(model_config, description["stage"], params,
                    {"kind": "export", "path": str(directory),
                     "source": description.get("source", {})})


def load_modules(sources: Sequence[str], model_config: ModelConfig) -> Dict[str, Any]:
  """Top-level modules from several sources (e.g. ``marlin.pth`` and ``audiomae.pth``), each
  module from one of them, in the layout of ``model_config``; released files are converted for
  ``model_config``. Raises ``ValueError`` naming a module two sources give."""
  modules: Dict[str, Any] = {}
  for source in sources:
    params = load(source, model_config).params
    twice = sorted(set(params) & set(modules))
    if twice:
      raise ValueError(f"init_from: {source} gives modules {twice} that an earlier entry of "
                       f"{','.join(sources)!r} gave already; name each module's source once")
    modules.update(params)
  return stacking.to_layout(modules, model_config)
