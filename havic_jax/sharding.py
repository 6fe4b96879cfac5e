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


def mesh_shape(axis_sizes: Mapping[str, Any], num_devices: int, num_slices: int = 1
               ) -> Tuple[int, ...]:
  """Sizes of (data, fsdp, tensor) over ``num_devices`` devices in ``num_slices`` slices: per
  axis the within-slice size ``axis_sizes[axis]`` (``config.mesh``; other keys such as
  ``batch_axes`` are not sizes) times the across-slice (DCN) size ``axis_sizes["dcn_" +
  axis]`` (default 1). In each group one size may be -1 (the remaining devices, slices)."""
  ici = _axis_sizes(axis_sizes, "", num_devices // num_slices, "devices per slice")
  dcn = _axis_sizes(axis_sizes, "dcn_", num_slices, "slices")
  return tuple(i * d for i, d in zip(ici, dcn))


def _axis_sizes(axis_sizes: Mapping[str, Any], prefix: str, available: int, what: str
                ) -> Tuple[int, ...]:
  """Sizes of the (data, fsdp, tensor) fields ``prefix + axis`` of ``axis_sizes`` over
  ``available`` devices or slices; one may be -1 (the rest)."""
  names = [prefix + name for name in MESH_AXES]
  sizes = [int(axis_sizes.get(name, 1)) for name in names]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one of {names} may be -1, got {dict(zip(names, sizes))}")
  if -1 in sizes:
    if available % fixed:
      raise ValueError(f"{available} {what} do not split into mesh axes "
                       f"{dict(zip(names, sizes))}")
    sizes[sizes.index(-1)] = available // fixed
  if int(np.prod(sizes)) != available:
    raise ValueError(f"mesh {dict(zip(names, sizes))} needs {int(np.prod(sizes))} {what}, "
                     f"but {available} are available; set config.mesh to match")
  return tuple(sizes)


def num_slices(devices: Sequence[Any]) -> int:
  """How many slices (TPU pods joined over the data-centre network) ``devices`` span: the
  distinct ``slice_index`` values (1 where devices have none, as CPUs and GPUs)."""
  return len({getattr(device, "slice_index", 0) for device in devices})


def make_mesh(axis_sizes: Mapping[str, Any], devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over ``devices`` (default: all), GSPMD-style (Auto) axes.

  Over several slices the mesh is hybrid (``mesh_utils.create_hybrid_device_mesh``): each
  axis is its within-slice size (``axis_sizes[axis]``) times its across-slice size
  (``axis_sizes["dcn_" + axis]``), with the slices outermost, so only the axes given DCN sizes
  above 1 (by default ``data``: the gradient all-reduce) cross slices."""
  devices = list(jax.devices() if devices is None else devices)
  slices = num_slices(devices)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if slices == 1:
    shape = mesh_shape(axis_sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  from jax.experimental import mesh_utils
  ici = _axis_sizes(axis_sizes, "", len(devices) // slices, "devices per slice")
  dcn = _axis_sizes(axis_sizes, "dcn_", slices, "slices")
  grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


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


def process_block(mesh: Mesh, batch_axes: Sequence[str], global_batch_size: int
                  ) -> Tuple[int, int]:
  """(index, count): this process holds rows [index · b, (index + 1) · b) of every global
  batch of ``global_batch_size`` split over ``batch_axes``, b = ``global_batch_size`` / count
  (``jax.make_array_from_process_local_data`` places its local batch there). Raises where the
  mesh gives a process rows that are not one such block."""
  size = local_batch_size(global_batch_size)
  rows = sorted({index[0].indices(global_batch_size)[:2] for index in
                 batch_sharding(mesh, batch_axes).addressable_devices_indices_map(
                     (global_batch_size,)).values()})
  start, stop = rows[0][0], rows[-1][1]
  contiguous = all(a[1] >= b[0] for a, b in zip(rows, rows[1:]))
  if not contiguous or stop - start != size or start % size:
    raise ValueError(f"the mesh gives process {jax.process_index()} batch rows {rows}, not one "
                     f"block of {size}; order config.mesh so each process's devices are "
                     f"adjacent on the batch axes {tuple(batch_axes)}")
  return start // size, global_batch_size // size


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axes: Sequence[str]
                 ) -> dict:
  """Host-local NumPy arrays (this process's slice of the global batch) -> global jax Arrays
  with the leading axis split over the mesh axes ``batch_axes``."""
  sharding = batch_sharding(mesh, batch_axes)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
