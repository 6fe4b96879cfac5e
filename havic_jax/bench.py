"""Step-time benchmark: compile time, step times, samples/s, FLOPs, MFU and memory.

  python -m havic_jax.bench --config=configs/pretrain_base.py [--batch=B] [--steps=N]
      [--mode=train|forward] [--data=random|pipeline] [--output=bench.json] [--profile=DIR]
      [--config.x=y]

``--mode=train`` times the training step of the config's stage and detector, as the training
loop builds it (``builder.build``), on the config's mesh;
``--mode=forward`` times the forward pass of the detector's window scorer for the config's stage
(one window per sample: the eval binary's unit of work; HAVIC's is its fine-tuned classifier,
so give it a fine-tuning config). Batches are random arrays of the model's input shapes
(``--data=random``) or come from the config's real input pipeline (``--data=pipeline``, which
also reports the share of wall time spent waiting for data).

FLOPs per sample are counted two ways: from the program (every ``dot_general`` and convolution
of the step's jaxpr: 2 FLOPs per multiply-add, scans multiplied by their length — the model's
matmul FLOPs, independent of the compiler) and XLA's own cost analysis of the compiled step.
MFU = achieved model FLOP/s ÷ the device's peak dense bf16 FLOP/s (table below; unknown devices,
CPUs included, get none). Results print as a table and are written as JSON with ``--output``.
"""

from __future__ import annotations

import json
import math
import platform
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import app, flags
from jax.extend import core as jax_core
from ml_collections import config_flags

from havic_jax import cli, detectors, sharding, storage
from havic_jax.training import builder, loop
from havic_jax.data.random_batches import synthetic_batches

FLAGS = flags.FLAGS
# Peak dense bf16 FLOP/s per chip (vendor figures, no sparsity), by a substring of device_kind.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> Optional[float]:
  """The peak dense bf16 FLOP/s of a chip, or None when it is not in PEAK_BF16_FLOPS."""
  for name, peak in PEAK_BF16_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def _sub_jaxprs(eqn: Any) -> Iterator[tuple]:
  """(jaxpr, multiplicity) of the sub-programs of an equation (scan bodies run ``length``
  times; other higher-order primitives once)."""
  times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr, times
      elif isinstance(item, jax_core.Jaxpr):
        yield item, times


def matmul_flops(jaxpr: Any) -> float:
  """FLOPs of every dot_general and convolution in ``jaxpr`` (and its sub-programs):
  2 × multiply-adds. ``cond`` branches are all counted (an upper bound)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      contracted = math.prod(lhs[d] for d in lhs_contract)
      total += 2.0 * contracted * math.prod(eqn.outvars[0].aval.shape)
    elif name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out = eqn.outvars[0].aval.shape
      spec = eqn.params["dimension_numbers"]
      in_features = kernel[spec.rhs_spec[1]]
      window = math.prod(kernel[d] for d in spec.rhs_spec[2:])
      total += 2.0 * math.prod(out) * in_features * window / eqn.params["feature_group_count"]
    for sub, times in _sub_jaxprs(eqn):
      total += times * matmul_flops(sub)
  return total


def forward_step(training: builder.Training) -> Tuple[Callable, Any]:
  """(jitted ``(params, global batch) -> window outputs`` of the detector's scorer
  (``detectors.window_scorer``, the eval binary's unit of work), freshly initialised
  parameters in their shardings) of ``training``'s model."""
  config = training.config
  scorer = detectors.window_scorer(training.cfg, detectors.detector_name(config), config.stage,
                                   detectors.options_of(config))
  param_shardings = training.shardings.params
  with training.scope():  # parameters only: the optimiser state is never materialised
    params = jax.jit(lambda key: training.init(key).params, out_shardings=param_shardings)(
        jax.random.PRNGKey(config.seed))
  forward = lambda params, batch: scorer(params, batch["video"], batch["audio"])
  jitted = jax.jit(forward, in_shardings=(param_shardings, training.batch_sharding),
                   out_shardings=sharding.replicated(training.mesh))
  return jitted, params


def run(config: Any, batch_size: int, steps: int, warmup: int, mode: str, data: str,
        workdir: str = "/tmp/havic_bench", profile_dir: Optional[str] = None) -> Dict[str, Any]:
  """Benchmarks ``mode`` ("train" or "forward") of ``config`` at global ``batch_size``; with
  ``profile_dir``, a ``jax.profiler`` trace of the timed steps is written there."""
  config = config.copy_and_resolve_references()
  config.unlock()
  config.batch_size = batch_size
  prepared = loop.open_training_data(config, workdir) if data == "pipeline" else None
  training = builder.build(config, sharding.make_mesh(config.mesh), prepared)
  config, cfg = training.config, training.cfg
  batches = (loop.training_iterator(prepared, config, cfg) if prepared is not None else
             synthetic_batches(cfg, config.stage, batch_size, config.seed))
  if mode == "train":
    with training.scope():
      carry = training.init(jax.random.PRNGKey(config.seed))
    step_fn = call = training.step
  else:
    step_fn, carry = forward_step(training)
    call = lambda params, batch: (params, step_fn(params, batch))

  first = training.global_batch(next(batches))
  with training.scope():
    started = time.perf_counter()
    lowered = step_fn.lower(carry, first)
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - started
    model_flops = matmul_flops(jax.make_jaxpr(step_fn)(carry, first).jaxpr) / batch_size
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan"))) / batch_size if cost else float("nan")
  memory = compiled.memory_analysis()

  times, waits = [], []
  batch = first
  for index in range(warmup + steps if steps else 0):  # steps=0: compile and memory only
    if profile_dir and index == warmup:
      jax.profiler.start_trace(profile_dir)
    started = time.perf_counter()
    if index:
      batch = training.global_batch(next(batches))
    fetched = time.perf_counter()
    carry, out = call(carry, batch)
    jax.block_until_ready(out)
    done = time.perf_counter()
    if index >= warmup:
      times.append(done - started)
      waits.append(fetched - started)
  if profile_dir and steps:
    jax.profiler.stop_trace()
  nan = float("nan")
  median = float(np.median(times)) if times else nan
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind)
  achieved = model_flops * batch_size / median / jax.device_count()
  stats = device.memory_stats() or {}
  return {
      "config": {"stage": config.stage, "mode": mode, "batch_size": batch_size,
                 "detector": detectors.detector_name(config),
                 "dtype": cfg.dtype, "attention_impl": cfg.attention_impl, "remat": cfg.remat,
                 "remat_policy": cfg.remat_policy, "scan_layers": cfg.scan_layers,
                 "grad_accumulation_steps": config.grad_accumulation_steps,
                 "mesh": dict(config.mesh), "data": data},
      "device": {"kind": device.device_kind, "platform": device.platform,
                 "count": jax.device_count(), "host": platform.node()},
      "compile_seconds": compile_seconds,
      "step_seconds": {"median": median, "min": float(np.min(times)) if times else nan,
                       "max": float(np.max(times)) if times else nan, "steps": steps},
      "samples_per_second": batch_size / median,
      "samples_per_second_per_chip": batch_size / median / jax.device_count(),
      "model_tflop_per_sample": model_flops / 1e12,
      "xla_tflop_per_sample": xla_flops / 1e12,
      "achieved_tflops_per_chip": achieved / 1e12,
      "peak_tflops_per_chip": None if peak is None else peak / 1e12,
      "mfu": None if peak is None else achieved / peak,
      "peak_memory_bytes": stats.get("peak_bytes_in_use"),
      "compiled_memory_bytes": None if memory is None else builder.memory_needed(memory),
      "data_wait_fraction": float(np.sum(waits) / np.sum(times)) if times else nan,
  }


def format_rows(rows: Sequence[Tuple[str, str]]) -> str:
  """(name, value) rows as aligned text lines."""
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def table(result: Dict[str, Any]) -> str:
  """The result as aligned "name  value" lines."""
  step = result["step_seconds"]
  fmt = lambda x, spec: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else (
      format(x, spec))
  rows = [
      ("device", f"{result['device']['count']} × {result['device']['kind']}"),
      ("config", json.dumps(result["config"])),
      ("compile", f"{result['compile_seconds']:.1f} s"),
      ("step (median / min / max)", f"{fmt(step['median'], '.3f')} / {fmt(step['min'], '.3f')}"
                                    f" / {fmt(step['max'], '.3f')} s over {step['steps']} steps"),
      ("samples/s (per chip)", f"{fmt(result['samples_per_second'], '.2f')} "
                               f"({fmt(result['samples_per_second_per_chip'], '.2f')})"),
      ("model TFLOP/sample", fmt(result["model_tflop_per_sample"], ".4f")),
      ("XLA TFLOP/sample", fmt(result["xla_tflop_per_sample"], ".4f")),
      ("achieved TFLOP/s per chip", fmt(result["achieved_tflops_per_chip"], ".3f")),
      ("MFU", fmt(result["mfu"], ".1%")),
      ("peak memory", fmt(result["peak_memory_bytes"] and result["peak_memory_bytes"] / 2**30,
                          ".2f") + " GiB"),
      ("compiled memory", fmt(result["compiled_memory_bytes"] and
                              result["compiled_memory_bytes"] / 2**30, ".2f") + " GiB"),
      ("data wait", fmt(result["data_wait_fraction"], ".1%")),
  ]
  return format_rows(rows)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  result = run(config, FLAGS.batch or config.batch_size, FLAGS.steps, FLAGS.warmup, FLAGS.mode,
               FLAGS.data, profile_dir=FLAGS.profile)
  print(table(result))
  write_output(result, FLAGS.output)


def write_output(result: Dict[str, Any], output: Optional[str]) -> None:
  """Writes a report ``result`` as JSON to ``output`` (a local path or ``gs://`` URI) when one
  is given."""
  if output:
    storage.path(output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {output}")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Training config file.")
  flags.DEFINE_integer("batch", None, "Global batch size (default: the config's).",
                       lower_bound=1)
  flags.DEFINE_integer("steps", 10, "Timed steps after the warm-up (0: compile only, to read "
                       "the compiled program's memory at a batch size).", lower_bound=0)
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.", lower_bound=0)
  flags.DEFINE_enum("mode", "train", ["train", "forward"],
                    "train: the training step of config.stage; forward: the detector's "
                    "window scorer (eval windows).")
  flags.DEFINE_enum("data", "random", ["random", "pipeline"],
                    "random arrays, or the config's input pipeline (measures data wait).")
  flags.DEFINE_string("output", None, "Write the result as JSON here.")
  flags.DEFINE_string("profile", None, "Write a jax.profiler trace of the timed steps here "
                      "(open with TensorBoard's profile plugin or Perfetto).")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
