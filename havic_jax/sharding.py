"""Device mesh, logical-axis rules and the shardings of state and batches.

Models only name their axes (``embed``, ``mlp``, ``heads``, ...); the config maps names to the
mesh axes ``data``, ``fsdp`` and ``tensor``. Batches are split over the mesh axes the config
names in ``config.mesh.batch_axes`` (``data`` × ``fsdp``), passed here as ``batch_axes``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[Tuple[str, Any]]


def mesh_shape(axis_sizes: Mapping[str, Any], num_devices: int) -> Tuple[int, ...]:
  """Sizes of (data, fsdp, tensor) from ``axis_sizes`` (``config.mesh``; other keys such as
  ``batch_axes`` are not sizes); one size may be -1 (the remaining devices)."""
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f"{num_devices} devices do not split into mesh axes "
                       f"{dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // fixed
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"but {num_devices} are available; set config.mesh to match")
  return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, Any], devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over ``devices`` (default: all), GSPMD-style (Auto) axes."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axis_sizes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree whose leaves may be ``nn.Partitioned`` boxes (unboxed layout);
  unannotated leaves are replicated."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str]) -> NamedSharding:
  """Leading (batch) axis split over the mesh axes ``batch_axes``, everything else
  replicated."""
  return NamedSharding(mesh, PartitionSpec(tuple(batch_axes)))


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of a global batch of ``global_batch_size`` (split evenly over the
  processes)."""
  if global_batch_size % jax.process_count():
    raise ValueError(f"batch_size {global_batch_size} does not split over "
                     f"{jax.process_count()} processes")
  return global_batch_size // jax.process_count()


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axes: Sequence[str]
                 ) -> dict:
  """Host-local NumPy arrays (this process's slice of the global batch) -> global jax Arrays
  with the leading axis split over the mesh axes ``batch_axes``."""
  sharding = batch_sharding(mesh, batch_axes)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
