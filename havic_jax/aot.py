"""Ahead-of-time compilation of the training step for a TPU topology, on any host (a CPU is
enough): per-chip memory against the chip's HBM, the collectives of the compiled program, the
model FLOPs per chip and the compile time. Nothing runs: the state, its key and the batch are
abstract arrays on the devices of a topology description (``libtpu`` compiles, it needs no
TPU; ``pip install "havic_jax[tpu]"``).

  python -m havic_jax.aot --config=configs/pretrain_base.py --topology=v5p:4x4x4
      [--num_slices=N] [--per_chip_batch=B | --batch=GLOBAL] [--find_batch] [--output=FILE.json]
      [--config.x=y]

The step is the one ``loop.run`` compiles (``builder.build``), for the config's stage and
detector, on ``config.mesh`` over the topology's chips. ``--find_batch`` finds the largest
per-chip batch that fits from the linearity of memory in the batch: two compiles give the line,
a third checks the batch it predicts (and, while that one does not fit, the line through the
last two points predicts again).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
from absl import app, flags
from ml_collections import config_flags

from havic_jax.errors import UserError
from havic_jax import bench, cli, sharding
from havic_jax.training import builder, hlo_costs

FLAGS = flags.FLAGS
GiB = 2 ** 30
# HBM per chip by TPU generation (the part of a topology name before ":").
HBM_BYTES = {"v4": 32 * GiB, "v5e": 16 * GiB, "v5p": 95 * GiB, "v6e": 32 * GiB}
# The TPU compiler's out-of-memory error: "... the total memory required for HLO temporaries
# (72.25G) exceeds available HBM (15.75G)."
_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM "
                  r"\(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


class AotError(UserError):
  """A request the tool cannot compile (unknown topology, no libtpu, bad batch)."""


def generation(topology: str) -> str:
  """"v5p:2x2x1" -> "v5p", checked against ``HBM_BYTES``."""
  name = topology.split(":")[0]
  if name not in HBM_BYTES or ":" not in topology:
    raise AotError(f"--topology must be GENERATION:SHAPE with GENERATION one of "
                   f"{sorted(HBM_BYTES)} (e.g. v5p:4x4x4, v6e:16x16), got {topology!r}")
  return name


def topology_devices(topology: str, num_slices: int = 1) -> List[Any]:
  """The chips of ``num_slices`` slices of a TPU topology (compile-only devices; each has its
  ``slice_index``)."""
  generation(topology)
  if importlib.util.find_spec("libtpu") is None:
    raise AotError('compiling for TPU needs libtpu: pip install "havic_jax[tpu]"')
  # Compiling opens no chip, so libtpu's one-process-per-host lock is not needed.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax._src import hardware_utils
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0:
    # libtpu's start looks up this host's TPU type and workers and prints errors where there
    # is none; these placeholders answer it (the topology compiled for stays the one named).
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{generation(topology)}-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  from jax.experimental import topologies
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                             num_slices=num_slices).devices)
  except Exception as error:  # libtpu's messages span lines; keep the first
    raise AotError(f"topology {topology!r}: {str(error).splitlines()[0]}") from error


def batch_shards(mesh_config: Any, num_devices: int, num_slices: int = 1) -> int:
  """How many shards a global batch splits into on ``num_devices`` in ``num_slices`` slices:
  the product of the sizes of the mesh axes ``mesh_config.batch_axes`` (``config.mesh``)."""
  sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(mesh_config, num_devices,
                                                           num_slices)))
  return math.prod(sizes[axis] for axis in mesh_config.batch_axes)


def per_chip_bytes(tree: Any) -> int:
  """Bytes of one device's shard of every ``jax.ShapeDtypeStruct`` leaf of ``tree`` (leaves
  carry their shardings); the largest shard where shards differ."""
  return int(sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
                 for leaf in jax.tree.leaves(tree)))


def _oom_bytes(message: str) -> Optional[Tuple[int, int]]:
  """(temporary bytes needed, capacity for them) from the TPU compiler's out-of-memory
  error, or None."""
  found = _OOM.search(message)
  if not found:
    return None
  return (int(float(found.group(1)) * _UNITS[found.group(2)]),
          int(float(found.group(3)) * _UNITS[found.group(4)]))


def compile_step(config: Any, topology: str, per_chip_batch: int, num_slices: int = 1
                 ) -> Tuple[Dict[str, Any], Optional[str]]:
  """Compiles ``config``'s training step for ``num_slices`` slices of ``topology`` at
  ``per_chip_batch`` samples per batch shard (global batch = per_chip_batch × data × fsdp).
  Returns (report, the compiled HLO text, or None where the compiler refused the program for
  lack of HBM).

  The report gives per chip: the shard bytes of parameters, optimiser state, batch and
  step + key (unpadded); the compiled program's arguments (the same arrays padded to TPU
  tiles), temporaries, outputs, aliased outputs and generated code; their total against the
  chip's HBM and whether it fits; the collectives per step; model TFLOPs per step; and the
  compile time in seconds."""
  devices = topology_devices(topology, num_slices)
  config = config.copy_and_resolve_references()
  config.unlock()
  mesh_sizes = sharding.mesh_shape(config.mesh, len(devices), num_slices)
  config.batch_size = per_chip_batch * batch_shards(config.mesh, len(devices), num_slices)
  training = builder.build(config, sharding.make_mesh(config.mesh, devices))
  config = training.config
  state = training.abstract_state()
  batch = training.batch_spec(config.batch_size)
  hbm = HBM_BYTES[generation(topology)]
  model_config = training.model_config
  report: Dict[str, Any] = {
      "topology": topology,
      "slices": num_slices,
      "chips": len(devices),
      "device_kind": devices[0].device_kind,
      "config": {
          "stage": config.stage,
          "detector": config.detector.name,
          "dtype": model_config.dtype,
          "attention": model_config.attention_impl,
          "remat": model_config.remat,
          "remat_policy": model_config.remat_policy,
          "scan_layers": model_config.scan_layers,
          "grad_accumulation_steps": config.grad_accumulation_steps
      },
      "mesh": dict(zip(sharding.MESH_AXES, mesh_sizes)),
      "global_batch": config.batch_size,
      "per_chip_batch": per_chip_batch,
      "hbm_bytes": hbm,
  }
  arguments = {"params": per_chip_bytes(state.params),
               "opt_state": per_chip_bytes(state.opt_state),
               "batch": per_chip_bytes(batch),
               "step_and_rng": per_chip_bytes((state.step, state.rng))}
  with training.scope():
    started = time.perf_counter()
    traced = training.step.trace(state, batch)
    try:
      compiled = traced.lower().compile()
    except Exception as error:  # the TPU compiler refuses programs larger than HBM
      oom = _oom_bytes(str(error))
      if oom is None:
        raise
      temporaries, capacity = oom  # total: at least these and the unpadded arguments
      report.update(compile_seconds=time.perf_counter() - started, fits=False,
                    bytes_per_chip=dict(arguments, temporaries=temporaries,
                                        total=temporaries + sum(arguments.values())),
                    compiler_capacity=capacity)
      return report, None
    compile_seconds = time.perf_counter() - started
  memory = compiled.memory_analysis()
  total = builder.memory_needed(memory)
  hlo = compiled.as_text()
  report.update(
      compile_seconds=compile_seconds, fits=total <= hbm,
      bytes_per_chip=dict(arguments, arguments=int(memory.argument_size_in_bytes),
                          temporaries=int(memory.temp_size_in_bytes),
                          outputs=int(memory.output_size_in_bytes),
                          aliased=int(memory.alias_size_in_bytes),
                          generated_code=int(memory.generated_code_size_in_bytes),
                          total=total),
      collectives=hlo_costs.collectives(hlo), dcn_transfers=hlo_costs.dcn_transfers(hlo),
      model_tflop_per_chip=bench.model_flops(training, "train", state, batch) / len(devices)
      / 1e12)
  return report, hlo


def find_batch(config: Any, topology: str, first: int = 4, num_slices: int = 1
               ) -> Dict[str, Any]:
  """The largest per-chip batch whose step fits the chip's HBM, from a line through the
  memory of two compiles (``first`` and 2 × ``first`` per chip), checked by compiling the
  batch it predicts; while that one does not fit, the line through the last two points
  predicts again. Returns {"per_chip_batch", "bytes_per_sample", "fixed_bytes", "compiles"}."""
  reports = [compile_step(config, topology, first, num_slices)[0],
             compile_step(config, topology, 2 * first, num_slices)[0]]
  hbm = reports[0]["hbm_bytes"]
  best = max((r for r in reports if r["fits"]), key=lambda r: r["per_chip_batch"], default=None)
  for _ in range(3):
    (b0, m0), (b1, m1) = [(r["per_chip_batch"], r["bytes_per_chip"]["total"])
                          for r in reports[-2:]]
    slope = (m1 - m0) / (b1 - b0)
    predicted = int((hbm - (m1 - slope * b1)) // slope)
    if predicted < 1 or predicted in (r["per_chip_batch"] for r in reports):
      break
    reports.append(compile_step(config, topology, predicted, num_slices)[0])
    if reports[-1]["fits"]:
      best = reports[-1] if best is None or predicted > best["per_chip_batch"] else best
      break
    reports[-2:] = sorted(reports[-2:], key=lambda r: r["per_chip_batch"])
  return {"per_chip_batch": None if best is None else best["per_chip_batch"],
          "bytes_per_sample": slope, "fixed_bytes": m1 - slope * b1,
          "compiles": reports}


def _size(count: float) -> str:
  """Bytes in GiB, or MiB below 1 GiB."""
  return f"{count / GiB:.2f} GiB" if count >= GiB else f"{count / 2 ** 20:.2f} MiB"


def table(report: Dict[str, Any]) -> str:
  """One compile's report as aligned "name  value" lines."""
  memory = report["bytes_per_chip"]
  size = lambda key: _size(memory[key]) if key in memory else "n/a"
  rows = [
      ("topology", f"{report.get('slices', 1)} × {report['topology']} ({report['chips']} × "
                   f"{report['device_kind']})"),
      ("mesh", json.dumps(report["mesh"])),
      ("config", json.dumps(report["config"])),
      ("batch (global / per chip)", f"{report['global_batch']} / {report['per_chip_batch']}"),
      ("compile", f"{report['compile_seconds']:.1f} s"),
      ("params / opt state / batch", f"{size('params')} / {size('opt_state')} / "
                                     f"{size('batch')}"),
      ("arguments (TPU-tiled)", size("arguments")),
      ("temporaries", size("temporaries")),
      ("outputs (aliased)", f"{size('outputs')} ({size('aliased')})"),
      ("total per chip", f"{size('total')} of {_size(report['hbm_bytes'])} HBM: "
                         + ("fits" if report["fits"] else "DOES NOT FIT")),
  ]
  if "compiler_capacity" in report:
    rows.append(("compiler's HBM for temporaries", _size(report["compiler_capacity"])))
  for kind, values in report.get("collectives", {}).items():
    rows.append((kind, f"{values['count']} per step, {_size(values['bytes'])}"))
  for kind, values in report.get("dcn_transfers", {}).items():
    rows.append((f"across slices: {kind.lower()}",
                 f"{values['count']} per step, {_size(values['bytes'])}"))
  if "model_tflop_per_chip" in report:
    rows.append(("model TFLOP per chip per step", f"{report['model_tflop_per_chip']:.4f}"))
  return bench.format_rows(rows)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(output_files={"--output": FLAGS.output, "--hlo": FLAGS.hlo})
  cli.enable_compilation_cache()
  config = FLAGS.config
  if FLAGS.batch is not None and FLAGS.per_chip_batch is not None:
    raise app.UsageError("give --per_chip_batch or --batch, not both")
  if FLAGS.find_batch and FLAGS.hlo:
    raise app.UsageError("--hlo writes one compile's program, not with --find_batch")
  try:
    devices = topology_devices(FLAGS.topology, FLAGS.num_slices)
    shape = sharding.mesh_shape(config.mesh, len(devices), FLAGS.num_slices)
    shards = batch_shards(config.mesh, len(devices), FLAGS.num_slices)
    per_chip = FLAGS.per_chip_batch
    if per_chip is None and (FLAGS.batch is not None or not FLAGS.find_batch):
      # --batch, or the config's batch_size
      global_batch = config.batch_size if FLAGS.batch is None else FLAGS.batch
      if global_batch % shards:
        raise AotError(f"a global batch of {global_batch} does not split over the {shards} "
                       f"batch shards ({' × '.join(config.mesh.batch_axes)}) of mesh "
                       f"{dict(zip(sharding.MESH_AXES, shape))}")
      per_chip = global_batch // shards
    if FLAGS.find_batch:
      result: Dict[str, Any] = find_batch(config, FLAGS.topology, per_chip or 4,
                                          FLAGS.num_slices)
      for report in result["compiles"]:
        print(table(report), end="\n\n")
      print(f"largest per-chip batch that fits: {result['per_chip_batch']} "
            f"({_size(result['bytes_per_sample'])} per sample + "
            f"{_size(result['fixed_bytes'])})")
    else:
      result, hlo = compile_step(config, FLAGS.topology, per_chip, FLAGS.num_slices)
      print(table(result))
      if FLAGS.hlo and hlo is not None:
        with open(FLAGS.hlo, "w") as file:
          file.write(hlo)
  except AotError as error:
    raise app.UsageError(str(error)) from None
  bench.write_output(result, FLAGS.output)


def define_flags() -> None:
  cli.define_compilation_cache_flag()
  config_flags.DEFINE_config_file("config", None, "Training config file.")
  flags.DEFINE_string("topology", None, "TPU topology, GENERATION:SHAPE, e.g. v5p:4x4x4, "
                      "v5e:16x16, v6e:16x16 (generations: " + ", ".join(HBM_BYTES) + ").")
  flags.DEFINE_integer("num_slices", 1, "Slices of --topology joined over the data-centre "
                       "network (multi-slice; the mesh's across-slice sizes are "
                       "config.mesh.dcn_data / dcn_fsdp / dcn_tensor).", lower_bound=1)
  flags.DEFINE_integer("per_chip_batch", None, "Samples per batch shard (data × fsdp); the "
                       "global batch is this times the shard count.", lower_bound=1)
  flags.DEFINE_integer("batch", None, "Global batch (default: the config's batch_size).",
                       lower_bound=1)
  flags.DEFINE_bool("find_batch", False, "Find the largest per-chip batch that fits "
                    "(starting from --per_chip_batch or --batch, default 4 per chip).")
  flags.DEFINE_string("output", None, "Write the report as JSON here.")
  flags.DEFINE_string("hlo", None, "Write the compiled program's HLO text here (one compile, "
                      "not with --find_batch).")
  flags.mark_flags_as_required(["config", "topology"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
