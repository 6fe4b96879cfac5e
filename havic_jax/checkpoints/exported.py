"""Exported parameters: one directory that fine-tuning, pretraining and users load in one call.

  python -m havic_jax.export --workdir=PRETRAIN_WORKDIR --output=DIR [--step=N]

An export directory holds

  config.json         the model config (every ``ModelConfig`` field), ``stage``, ``compat``, the
                      top-level ``modules`` it holds, ``left_at_initialisation`` (parameters of
                      those modules it lacks: an importer keeps its own initial values), the
                      havic_jax version and the ``source`` (training run or converted file);
  params.safetensors  the parameters, flat: ``video_encoder/block_0/attn/qkv/kernel`` -> array
                      (the parameter path joined by "/");
  params/             the same tree as an Orbax PyTree checkpoint.

``havic_jax.load(DIR)`` (:func:`havic_jax.checkpoints.loading.load`) reads it (Orbax, or the
safetensors file when ``params/`` is absent). By default an export of a training run holds the
modules fine-tuning starts from: the two encoders and the interaction module (spec §11).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from etils import epath
from safetensors.numpy import save

from havic_jax import storage
from havic_jax.models import stacking
from havic_jax.models.config import ModelConfig, model_config_from
from havic_jax.models.reference import param_shapes
from havic_jax.models.havic_models import PRETRAINED_MODULES

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "params.safetensors"
ORBAX_DIR = "params"
PATH_SEPARATOR = "/"
PACKAGE = "havic_jax"


class ExportError(ValueError):
  """Parameters that do not fit the model they are exported for: names the offending paths."""


def package_version() -> str:
  try:
    return importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:  # run from a source checkout, not installed
    return "unknown (not installed)"


def flatten_params(params: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Nested parameters -> {"module/.../name": contiguous NumPy array}."""
  flat = traverse_util.flatten_dict(params, sep=PATH_SEPARATOR)
  return {key: np.ascontiguousarray(np.asarray(value)) for key, value in flat.items()}


def leaves_left_out(params: Mapping[str, Any], model_config: ModelConfig, stage: str) -> List[str]:
  """Parameter paths of the top-level modules in ``params`` that ``params`` lacks ("/"-joined).

  Raises :class:`ExportError` naming leaves the ``stage`` model does not have or whose shape
  differs from this config's."""
  shapes = {
      PATH_SEPARATOR.join(path): shape for path, shape in param_shapes(model_config, stage).items()
  }
  unknown_modules = sorted(set(params) - {key.split(PATH_SEPARATOR)[0] for key in shapes})
  if unknown_modules:
    raise ExportError(f"the {stage} model has no modules {unknown_modules}")
  flat = flatten_params(params)
  unknown = sorted(set(flat) - set(shapes))
  wrong_shape = [f"{key}: {flat[key].shape}, the model's {shapes[key]}"
                 for key in sorted(set(flat) & set(shapes)) if flat[key].shape != shapes[key]]
  if unknown or wrong_shape:
    raise ExportError(f"parameters do not fit the {stage} model of this config: unknown "
                      f"{unknown}, shape mismatches {wrong_shape}; export with the config the "
                      f"parameters were trained or converted with")
  return sorted(key for key in shapes if key.split(PATH_SEPARATOR)[0] in params
                and key not in flat)


def export_params(params: Mapping[str, Any], model_config_dict: Mapping[str, Any], stage: str,
                  compat: str, output_dir: str,
                  modules: Sequence[str] = PRETRAINED_MODULES,
                  source: Optional[Mapping[str, Any]] = None) -> epath.Path:
  """Writes the top-level ``modules`` of ``params`` as an export directory ``output_dir``.

  Args:
    params: nested parameters of the ``stage`` ("pretrain" / "finetune") model, NumPy or JAX
      arrays; a module may hold only some of its parameters (an initialisation from MARLIN or
      AudioMAE), the others are listed in config.json's ``left_at_initialisation``.
    model_config_dict: ``config.model`` (fields of ``ModelConfig``).
    compat: ``config.compat``; resolves ``audio_segments`` when the model config leaves it None.
    output_dir: created; must not exist or be empty; a local path or a ``gs://`` URI.
    modules: top-level modules to write (default: encoders + interaction, what fine-tuning
      loads).
    source: where the parameters come from (recorded in config.json).
  Returns:
    the export directory.
  """
  missing = [name for name in modules if name not in params]
  if missing:
    raise ExportError(f"no modules {missing} in the parameters; they hold {sorted(params)}")
  # Exports hold the per-layer layout whatever the run's (models.stacking).
  model_config = dataclasses.replace(model_config_from(model_config_dict, compat),
                                     scan_layers=False)
  selected = stacking.unstack_layers({name: params[name] for name in modules})
  left_out = leaves_left_out(selected, model_config, stage)
  directory = storage.path(output_dir)
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"{directory} is not empty; export into a new directory")
  directory.mkdir(parents=True, exist_ok=True)
  flat = flatten_params(selected)
  (directory / SAFETENSORS_FILE).write_bytes(save(flat))
  ocp.PyTreeCheckpointer().save(directory / ORBAX_DIR,
                                traverse_util.unflatten_dict(flat, sep=PATH_SEPARATOR))
  description = {
      "havic_jax_version": package_version(),
      "stage": stage,
      "compat": compat,
      "model": dataclasses.asdict(model_config),
      "modules": list(modules),
      "left_at_initialisation": left_out,
      "source": dict(source or {}),
  }
  (directory / CONFIG_FILE).write_text(json.dumps(description, indent=1) + "\n")
  return directory


def read_export_config(path: str) -> Dict[str, Any]:
  """config.json of the export directory ``path``."""
  config_path = storage.path(path) / CONFIG_FILE
  if not config_path.is_file():
    raise FileNotFoundError(f"{config_path}: missing; is {path} an export of "
                            f"`python -m havic_jax.export` or `python -m havic_jax.convert`?")
  return json.loads(config_path.read_text())
