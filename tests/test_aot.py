"""Ahead-of-time compilation for TPU topologies on this CPU host (``havic_jax.aot``)."""

import math
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import pretrain_tiny
from havic_jax import aot, sharding
from havic_jax.training import builder, hlo_costs

pytest.importorskip("libtpu", reason='the AOT tests compile for TPU topologies and need libtpu: '
                                     'pip install -e ".[tpu]"')

TOPOLOGY = "v5p:2x2x1"  # 4 chips
PER_CHIP = 2
HLO_DTYPES = {"f32": np.float32, "s32": np.int32, "u32": np.uint32, "u8": np.uint8}


def tiny(**mesh):
  config = pretrain_tiny.get_config()
  config.unlock()
  config.mesh.update(mesh)
  return config


MESHES = {"data_parallel": {"data": -1, "fsdp": 1}, "fully_sharded": {"data": 1, "fsdp": -1}}


@pytest.fixture(scope="module")
def compiles():
  """(report, HLO) of the tiny pretraining step on 4 v5p chips, data parallel and fsdp=4
  (one compile each, ~45 s on 2 cores)."""
  return {name: aot.compile_step(tiny(**mesh), TOPOLOGY, PER_CHIP)
          for name, mesh in MESHES.items()}


def shard_shape(shape, spec, mesh_sizes):
  """A leaf's per-chip shape from its partition spec: each dimension divided by the product
  of the mesh axes it is split over."""
  shape = list(shape)
  for dim, axes in enumerate(spec):
    axes = (axes,) if isinstance(axes, str) else (axes or ())
    shape[dim] //= math.prod(mesh_sizes[axis] for axis in axes)
  return tuple(shape)


def shard_shapes(tree, mesh_sizes):
  return [(shard_shape(leaf.shape, leaf.sharding.spec, mesh_sizes), leaf.dtype)
          for leaf in jax.tree.leaves(tree)]


def nbytes(shapes):
  return sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes)


def tiled_bytes(hlo_type):
  """Bytes of an HLO array type with its TPU layout, e.g. ``f32[64,16]{0,1:T(8,128)}``: the
  tile's dimensions pad the most minor dimensions of the layout to multiples of the tile."""
  dtype, dims, minor_to_major, tile = re.match(
      r"(\w+)\[([\d,]*)\]\{([\d,]*):T\(([\d,]+)\)", hlo_type).groups()
  dims = [int(d) for d in dims.split(",")] if dims else []
  tile = [int(t) for t in tile.split(",")]
  if not dims:
    return np.dtype(HLO_DTYPES[dtype]).itemsize * tile[-1]
  order = [int(d) for d in minor_to_major.split(",")]
  for size, dim in zip(reversed(tile), order):  # the most minor dimension takes the last size
    dims[dim] = -(-dims[dim] // size) * size
  return np.dtype(HLO_DTYPES[dtype]).itemsize * math.prod(dims)


def entry_parameters(hlo):
  """The HLO types of the entry computation's parameters."""
  entry = hlo[hlo.index("\nENTRY "):]
  return re.findall(r"= (\S+) parameter\(", entry[:entry.index("\n}")])


@pytest.mark.parametrize("name", sorted(MESHES))
def test_argument_bytes_are_the_shards_of_state_and_batch(compiles, name):
  report, hlo = compiles[name]
  config = tiny(**MESHES[name])
  training = builder.build(config, sharding.make_mesh(config.mesh,
                                                      aot.topology_devices(TOPOLOGY)))
  sizes = dict(training.mesh.shape)
  state = training.abstract_state()
  batch = training.batch_spec(PER_CHIP * 4)
  shapes = {"params": shard_shapes(state.params, sizes),
            "opt_state": shard_shapes(state.opt_state, sizes),
            "batch": shard_shapes(batch, sizes)}
  memory = report["bytes_per_chip"]
  for key, leaves in shapes.items():
    assert memory[key] == nbytes(leaves), key
  # The compiled program takes exactly these arrays (plus the step and the key) ...
  parameters = entry_parameters(hlo)
  step_and_key = [((), np.dtype(np.int32)), ((2,), np.dtype(np.uint32))]
  expected = sorted((np.dtype(dtype).name, tuple(shape))
                    for shape, dtype in sum(shapes.values(), step_and_key))
  found = []
  for hlo_type in parameters:
    dtype, dims = re.match(r"(\w+)\[([\d,]*)\]", hlo_type).groups()
    found.append((np.dtype(HLO_DTYPES[dtype]).name,
                  tuple(int(d) for d in dims.split(",")) if dims else ()))
  assert sorted(found) == expected
  # ... and its argument bytes are theirs, padded to the TPU's tiles.
  assert memory["arguments"] == sum(tiled_bytes(t) for t in parameters)
  assert memory["total"] == (memory["arguments"] + memory["outputs"] - memory["aliased"]
                             + memory["temporaries"])
  assert report["fits"] and report["hbm_bytes"] == 95 * 2 ** 30


def test_fsdp_shards_parameters_and_adds_gathers_and_scatters(compiles):
  replicated, sharded = (compiles[name][0] for name in ("data_parallel", "fully_sharded"))
  ratio = sharded["bytes_per_chip"]["params"] / replicated["bytes_per_chip"]["params"]
  assert 0.25 <= ratio < 0.3  # kernels split 4 ways; biases and norms stay whole
  assert sharded["bytes_per_chip"]["opt_state"] < 0.3 * replicated["bytes_per_chip"]["opt_state"]
  # Every sharded parameter is gathered for the forward pass and its gradient scattered, in
  # at least 16 bits: at least half its float32 bytes each way.
  sharded_full_bytes = 4 / 3 * (replicated["bytes_per_chip"]["params"]
                                - sharded["bytes_per_chip"]["params"])
  gathers, scatters = (sharded["collectives"][k] for k in ("all-gather", "reduce-scatter"))
  assert gathers["bytes"] >= sharded_full_bytes / 2
  assert scatters["count"] > 0 and scatters["bytes"] >= sharded_full_bytes / 2
  assert replicated["collectives"]["reduce-scatter"]["count"] == 0
  assert replicated["collectives"]["all-gather"]["bytes"] < gathers["bytes"] / 10
  # data parallel: the gradients are all-reduced whole
  assert replicated["collectives"]["all-reduce"]["bytes"] >= (
      replicated["bytes_per_chip"]["params"] / 2)
  for report in (replicated, sharded):
    assert report["model_tflop_per_chip"] > 0 and report["compile_seconds"] > 0


@pytest.mark.parametrize("name", MESHES)
def test_tpu_steps_run_the_pallas_flash_kernel(compiles, name):
  """``attention_impl="auto"`` on a TPU mesh: every attention of the step is the Pallas kernel
  (a Mosaic custom call in the compiled program), XLA's score matrices gone."""
  report, hlo = compiles[name]
  assert report["config"]["attention"] == "pallas"
  assert "tpu_custom_call" in hlo


def test_a_batch_far_too_large_for_v5e_does_not_fit():
  report, hlo = aot.compile_step(tiny(), "v5e:2x2", 2048)
  assert not report["fits"] and hlo is None
  assert report["hbm_bytes"] == 16 * 2 ** 30
  assert report["bytes_per_chip"]["total"] > report["hbm_bytes"]
  assert 15 * 2 ** 30 < report["compiler_capacity"] <= report["hbm_bytes"]
  assert "DOES NOT FIT" in aot.table(report)


HLO = """HloModule step

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %ag = bf16[4,8]{1,0:T(8,128)(2,1)} all-gather(%x), replica_groups=[1,4]<=[4], dimensions={0}
  %f = f32[2,8]{1,0} fusion(%y), kind=kCustom, calls=%all-reduce-scatter.3
}

%all-reduce-scatter.3 (input: f32[8,8]) -> f32[2,8] {
  %ar = f32[8,8]{1,0:T(8,128)} all-reduce(%input), replica_groups={{0,1,2,3}}, to_apply=%add
  ROOT %ds = f32[2,8]{1,0} dynamic-slice(%ar, %i, %j), dynamic_slice_sizes={2,8}
}

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (a: f32[16]) -> f32[16] {
  %w = (s32[], f32[8]) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  %cp = (f32[16]{0}, f32[16]{0}, u32[]{:T(128)}, u32[]{:T(128)}) collective-permute-start(%a), source_target_pairs={{0,1}}
  %rs = f32[4]{0} reduce-scatter(%a), replica_groups=mesh['axis_0'=1,'axis_1'=4] {'axis_1'}, dimensions={0}
  ROOT %sum = f32[] all-reduce(%s), replica_groups={{0,1,2,3}}, to_apply=%add
}
"""


def test_collectives_count_loop_iterations_and_whole_buffers():
  found = hlo_costs.collectives(HLO)
  assert found["all-gather"] == {"count": 3, "bytes": 3 * 4 * 8 * 2}
  # the TPU's all-reduce-scatter computation (3 times, in the loop) and a plain one
  assert found["reduce-scatter"] == {"count": 4, "bytes": 3 * 8 * 8 * 4 + 4 * 4 * 4}
  assert found["all-reduce"] == {"count": 1, "bytes": 4}
  assert found["collective-permute"] == {"count": 1, "bytes": 16 * 4}
  assert found["all-to-all"] == {"count": 0, "bytes": 0}


def test_find_batch_follows_the_memory_line(monkeypatch):
  """With memory = 1 GiB + 0.25 GiB × batch on a 16 GiB chip (a stand-in for the compiler),
  two compiles give the line and the third confirms its prediction, 60."""
  gib = 2 ** 30
  compiled = []

  def fake_compile(config, topology, per_chip_batch, num_slices=1):
    compiled.append(per_chip_batch)
    total = gib + gib // 4 * per_chip_batch
    return {"per_chip_batch": per_chip_batch, "hbm_bytes": 16 * gib, "fits": total <= 16 * gib,
            "bytes_per_chip": {"total": total}}, None
  monkeypatch.setattr(aot, "compile_step", fake_compile)
  result = aot.find_batch(tiny(), "v5e:2x2", first=4)
  assert compiled == [4, 8, 60] and result["per_chip_batch"] == 60
  assert result["bytes_per_sample"] == gib / 4 and result["fixed_bytes"] == gib


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "havic_jax.aot", *args], capture_output=True,
                        text=True, timeout=300)


def test_a_one_line_error_for_an_unknown_topology():
  result = run_cli("--config=configs/pretrain_tiny.py", "--topology=v9x:2x2")
  assert result.returncode != 0
  assert "--topology must be GENERATION:SHAPE" in result.stderr.strip().splitlines()[-1]


def test_two_slices_compile_with_only_data_parallel_traffic_across_them(compiles):
  """The tiny step for 2 × v5p:2x2x1 (8 chips, ``slice_index`` 0 and 1): the hybrid mesh puts
  the slices outermost on ``data`` (config.mesh.dcn_data = -1), and what crosses the
  data-centre network is the gradient all-reduce (and the contrastive loss's gather of the
  batch's embeddings), never the parameters."""
  devices = aot.topology_devices(TOPOLOGY, num_slices=2)
  assert sorted({d.slice_index for d in devices}) == [0, 1]
  config = tiny()
  mesh = sharding.make_mesh(config.mesh, devices)
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  assert [d.slice_index for d in mesh.devices.flat] == [0] * 4 + [1] * 4
  with pytest.raises(ValueError, match="needs 3 slices"):
    sharding.make_mesh(dict(config.mesh, dcn_data=3), devices)
  report, hlo = aot.compile_step(config, TOPOLOGY, PER_CHIP, num_slices=2)
  assert report["fits"] and report["slices"] == 2 and report["global_batch"] == 16
  across = report["dcn_transfers"]
  assert set(across) <= {"ALL_REDUCE", "ALL_GATHER"} and across["ALL_REDUCE"]["count"] > 0
  params = report["bytes_per_chip"]["params"]
  # Each chip sends a share of the gradients: at least its quarter of them, at most all.
  assert params / 4 <= across["ALL_REDUCE"]["bytes"] <= params
  assert across.get("ALL_GATHER", {"bytes": 0})["bytes"] < params / 100
  assert hlo_costs.dcn_transfers(compiles["data_parallel"][1]) == {}  # one slice: nothing crosses
