"""Step-time benchmark: compile time, step times, samples/s, FLOPs, MFU and memory.

  python -m havic_jax.bench --config=configs/pretrain_base.py [--batch=B] [--steps=N]
      [--mode=train|forward] [--data=random|pipeline] [--output=bench.json] [--profile=DIR]
      [--config.x=y]

``--mode=train`` times the training step of the config's stage and detector, as the training
loop builds it (``builder.build``), on the config's mesh;
``--mode=forward`` times the forward pass of the detector's window scorer for the config's stage
(one window per sample: the eval binary's unit of work; HAVIC's is its fine-tuned classifier,
so give it a fine-tuning config). The step is traced and compiled once per process (through
JAX's persistent compilation cache, ``--compilation_cache``), and that executable runs.

Compute-only figures time steps on batches already on the devices: random batches in the
pipeline's own layout (``--data=random``: uint8 video, host-drawn masks, labels; the program
training runs) or batches of the config's input pipeline (``--data=pipeline``), generated
before timing. ``--data=pipeline`` then measures the end-to-end rate: the pipeline feeding the
step through the training loop's device-prefetch ring, with the share of wall time spent
waiting for host batches.

FLOPs per sample are counted two ways: from the program (every ``dot_general`` and convolution
of the step's jaxpr: 2 FLOPs per multiply-add, scans multiplied by their length — the model's
matmul FLOPs, independent of the compiler) and XLA's own cost analysis of the compiled step.
MFU = achieved model FLOP/s ÷ the device's peak dense bf16 FLOP/s (``flops.PEAK_BF16_FLOPS``;
unknown devices, CPUs included, get none). Results print as a table and are written as JSON with ``--output``.
"""

from __future__ import annotations

import json
import math
import platform
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from havic_jax import cli, detectors, sharding, storage
from havic_jax.models import attention
from havic_jax.data import training_data
from havic_jax.training import builder, flops, loop, prefetch

FLAGS = flags.FLAGS
# Batches generated before timing and kept on the devices; the compute-only steps take them
# in turn.
STAGED_BATCHES = 3
def forward_step(training: builder.Training) -> Callable:
  """Jitted ``(params, global batch) -> window outputs`` of the detector's scorer
  (``detectors.window_scorer``, the eval binary's unit of work) of ``training``'s model,
  parameters in their shardings."""
  config = training.config
  scorer = detectors.window_scorer(training.model_config, detectors.detector_name(config),
                                   config.stage, detectors.options_of(config))
  forward = lambda params, batch: scorer(params, batch["video"], batch["audio"])
  return jax.jit(forward, in_shardings=(training.shardings.params, training.batch_sharding),
                 out_shardings=sharding.replicated(training.mesh))


def model_flops(training: builder.Training, mode: str, carry: Any, batch: Any) -> float:
  """Model FLOPs of one ``mode`` step ("train": ``training.step``; "forward":
  :func:`forward_step`) on ``carry`` (the state, or the parameters) and ``batch``: the
  ``flops.matmul_flops`` of the step traced with XLA attention (``flops.with_xla_attention``)."""
  if mode == "train":
    return flops.train_step_flops(training, carry, batch)
  counted = flops.with_xla_attention(training)
  with counted.scope():
    return flops.matmul_flops(forward_step(counted).trace(
        *builder.abstract_like((carry, dict(batch)))).jaxpr.jaxpr)


def _timed_steps(call: Callable, carry: Any, batches: Callable[[int], Any], count: int,
                 block_each: bool) -> Tuple[Any, List[float]]:
  """Runs ``count`` steps ``carry, out = call(carry, batches(i))``; returns (carry, seconds of
  each step, waited for one by one) or (carry, [seconds of all of them]) when not
  ``block_each`` (dispatched back to back, as the training loop does)."""
  times, started = [], time.perf_counter()
  for index in range(count):
    carry, out = call(carry, batches(index))
    if block_each:
      jax.block_until_ready(out)
      times.append(time.perf_counter() - started)
      started = time.perf_counter()
  if not block_each and count:
    jax.block_until_ready((carry, out))
    times.append(time.perf_counter() - started)
  return carry, times


def run(config: Any, batch_size: int, steps: int, warmup: int, mode: str, data: str,
        workdir: str = "/tmp/havic_bench", profile_dir: Optional[str] = None
        ) -> Dict[str, Any]:
  """Benchmarks ``mode`` ("train" or "forward") of ``config`` at global ``batch_size``; with
  ``profile_dir``, a ``jax.profiler`` trace of the timed steps is written there.

  The step is traced and compiled once; that executable reports the memory and runs every
  step. Compute-only: the steps take :data:`STAGED_BATCHES` batches already on the devices,
  in turn, each step waited for (median / min / max). With ``data="pipeline"`` the
  end-to-end rate follows: the same number of steps fed by the config's input pipeline through
  the training loop's device-prefetch ring (``data.device_prefetch``), dispatched back to back,
  with the share of wall time spent waiting for host batches."""
  config = config.copy_and_resolve_references()
  config.unlock()
  config.batch_size = batch_size
  prepared = (training_data.open_training_data(training_data.with_synthetic_corpus(
      config, workdir)) if data == "pipeline" else None)
  training = builder.build(config, sharding.make_mesh(config.mesh), prepared)
  config, model_config = training.config, training.model_config
  host = (loop.training_iterator(prepared, config, model_config, training.mesh)
          if prepared is not None else training.random_batches(batch_size))
  staged = [training.global_batch(next(host)) for _ in range(STAGED_BATCHES)]
  with training.scope():  # the optimiser state of "forward" is never materialised
    key = jax.random.PRNGKey(config.seed)
    carry = (training.init(key) if mode == "train" else
             jax.jit(lambda key: training.init(key).params,
                     out_shardings=training.shardings.params)(key))
  step = training.step if mode == "train" else forward_step(training)
  with training.scope():
    started = time.perf_counter()
    lowered = step.trace(*builder.abstract_like((carry, staged[0]))).lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - lowered_at
  trace_seconds = lowered_at - started
  call = compiled if mode == "train" else (
      lambda params, batch: (params, compiled(params, batch)))
  sample_flops = model_flops(training, mode, carry, staged[0]) / batch_size
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan"))) / batch_size if cost else float("nan")
  memory = compiled.memory_analysis()

  ring = lambda index: staged[index % len(staged)]
  carry, _ = _timed_steps(call, carry, ring, warmup if steps else 0, block_each=True)
  if profile_dir and steps:
    jax.profiler.start_trace(profile_dir)
  carry, times = _timed_steps(call, carry, ring, steps, block_each=True)
  if profile_dir and steps:
    jax.profiler.stop_trace()
  end_to_end = None
  if prepared is not None and steps:
    fed = prefetch.DevicePrefetch(host, training.global_batch, config.data.device_prefetch)
    carry, _ = _timed_steps(call, carry, lambda _: next(fed), warmup, block_each=True)
    waited = fed.wait_seconds
    carry, (wall,) = _timed_steps(call, carry, lambda _: next(fed), steps, block_each=False)
    end_to_end = {"samples_per_second": steps * batch_size / wall,
                  "data_wait_fraction": (fed.wait_seconds - waited) / wall,
                  "fraction_of_compute": float(np.median(times)) * steps / wall}
  nan = float("nan")
  median = float(np.median(times)) if times else nan
  device = jax.devices()[0]
  peak = flops.peak_flops(device.device_kind)
  achieved = sample_flops * batch_size / median / jax.device_count()
  stats = device.memory_stats() or {}
  return {
      "config": {"stage": config.stage, "mode": mode, "batch_size": batch_size,
                 "detector": detectors.detector_name(config),
                 "dtype": model_config.dtype, "attention_impl": config.model.attention_impl,
                 "remat": model_config.remat, "remat_policy": model_config.remat_policy,
                 "scan_layers": model_config.scan_layers,
                 "grad_accumulation_steps": config.grad_accumulation_steps,
                 "mesh": dict(config.mesh), "data": data},
      "batch": {key: [list(value.shape), value.dtype.name] for key, value in staged[0].items()},
      "attention": model_config.attention_impl,
      "attention_fallbacks": sorted(attention.FALLBACKS),
      "device": {"kind": device.device_kind, "platform": device.platform,
                 "count": jax.device_count(), "host": platform.node(),
                 "jax": jax.__version__},
      "trace_seconds": trace_seconds,
      "compile_seconds": compile_seconds,
      "compilation_cache": jax.config.jax_compilation_cache_dir
                           if jax.config.jax_enable_compilation_cache else None,
      "step_seconds": {"median": median, "min": float(np.min(times)) if times else nan,
                       "max": float(np.max(times)) if times else nan, "steps": steps},
      "samples_per_second": batch_size / median,
      "samples_per_second_per_chip": batch_size / median / jax.device_count(),
      "model_tflop_per_sample": sample_flops / 1e12,
      "xla_tflop_per_sample": xla_flops / 1e12,
      "achieved_tflops_per_chip": achieved / 1e12,
      "peak_tflops_per_chip": None if peak is None else peak / 1e12,
      "mfu": None if peak is None else achieved / peak,
      "peak_memory_bytes": stats.get("peak_bytes_in_use"),
      "compiled_memory_bytes": None if memory is None else builder.memory_needed(memory),
      "end_to_end": end_to_end,
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
      ("trace + lower / compile", f"{result['trace_seconds']:.1f} / "
       f"{result['compile_seconds']:.1f} s (compilation cache: "
       f"{result['compilation_cache'] or 'off'})"),
      ("step, compute-only (median / min / max)",
       f"{fmt(step['median'], '.3f')} / {fmt(step['min'], '.3f')}"
       f" / {fmt(step['max'], '.3f')} s over {step['steps']} steps"),
      ("samples/s (per chip)", f"{fmt(result['samples_per_second'], '.2f')} "
       f"({fmt(result['samples_per_second_per_chip'], '.2f')})"),
      ("model TFLOP/sample", fmt(result["model_tflop_per_sample"], ".4f")),
      ("XLA TFLOP/sample", fmt(result["xla_tflop_per_sample"], ".4f")),
      ("achieved TFLOP/s per chip", fmt(result["achieved_tflops_per_chip"], ".3f")),
      ("MFU", fmt(result["mfu"], ".1%")),
      ("peak memory",
       fmt(result["peak_memory_bytes"] and result["peak_memory_bytes"] / 2**30, ".2f") + " GiB"),
      ("compiled memory",
       fmt(result["compiled_memory_bytes"] and result["compiled_memory_bytes"] / 2**30, ".2f") +
       " GiB"),
      ("attention", result["attention"] +
       "".join(f"\n  fallback: {reason}" for reason in result["attention_fallbacks"])),
  ]
  end_to_end = result["end_to_end"]
  if end_to_end:
    rows += [("end-to-end samples/s", f"{end_to_end['samples_per_second']:.2f} "
                                      f"({end_to_end['fraction_of_compute']:.1%} of "
                                      f"compute-only)"),
             ("data wait (end-to-end)", f"{end_to_end['data_wait_fraction']:.1%}")]
  return format_rows(rows)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  cli.check_paths(inputs={"--config.data.path": config.data.path if FLAGS.data == "pipeline"
                          and config.data.source == "prepared" else ""},
                  output_files={"--output": FLAGS.output})
  cli.enable_compilation_cache()
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
  cli.define_compilation_cache_flag()
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
                    "random: random batches in the pipeline's layout; pipeline: batches of the "
                    "config's input pipeline, then the end-to-end rate with its data wait.")
  flags.DEFINE_string("output", None, "Write the result as JSON here.")
  flags.DEFINE_string("profile", None, "Write a jax.profiler trace of the timed steps here "
                      "(open with TensorBoard's profile plugin or Perfetto).")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
