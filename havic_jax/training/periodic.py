"""What the training loop does around its steps, one object per job, each called from
``loop.run`` after every step: the preemption decision (:class:`Preemption`), the profiler
window (:class:`Profile`), the finiteness check (:class:`FiniteCheck`) and the logging window
(:class:`WindowLog`, with throughput and chip use).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
from absl import logging

from havic_jax import storage
from havic_jax.training.metric_writer import MetricWriter


class Preemption:
  """The run's one decision to stop for a preemption notice (SIGTERM): every process saves
  the same step, then exits 0.

  A single process sets a flag from its own SIGTERM handler. Processes joined by
  ``jax.distributed`` decide together: JAX's preemption service (on by default,
  ``jax_enable_preemption_service``) takes SIGTERM on any process and agrees with the others
  on one step, which Orbax's ``reached_preemption`` reports on every process at once. There no
  Python handler is installed: it would replace the service's, and the process that got the
  signal would start a save (a collective) that the others never join."""

  def __init__(self, manager: Any):
    self.manager, self.raised = manager, False
    self.local = jax.process_count() == 1
    if self.local:
      self.previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self.raised = True

  def reached(self, step: int) -> bool:
    """Whether the run saves and stops after ``step``; called after every step, on every
    process."""
    return self.raised if self.local else self.manager.reached_preemption(step)

  def restore(self) -> None:
    """Puts back the SIGTERM handler the run found."""
    if self.local:
      signal.signal(signal.SIGTERM, self.previous)


class Profile:
  """A ``jax.profiler`` trace of ``config.profile.steps`` steps from ``start_step`` (-1: none)
  on process 0, written to ``config.profile.dir`` (default WORKDIR/profile; open it with
  TensorBoard's profile plugin or Perfetto, ``tensorboard --logdir=DIR``)."""

  def __init__(self, options: Any, workdir: str):
    self.start, self.steps = int(options.start_step), int(options.steps)
    self.directory = options.dir or os.fspath(storage.path(workdir) / "profile")
    self.active = self.start >= 0 and jax.process_index() == 0
    self.running = False

  def before(self, step: int) -> None:
    """Called before step ``step`` runs: starts the trace at ``start_step``."""
    if self.active and step == self.start:
      logging.info("profiling steps %d-%d to %s", self.start + 1, self.start + self.steps,
                   self.directory)
      jax.profiler.start_trace(self.directory)
      self.running = True

  def after(self, done: int, state: Any, last: bool) -> None:
    """Called after the step that brought the state to ``done`` (``last``: the run's last
    step): stops the trace once its steps have run on the device."""
    if self.running and (done == self.start + self.steps or last):
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.running = False


class FiniteCheck:
  """Stops a diverged run. The last step through which every loss (``total``) and gradient
  norm was finite is tracked on the device (no host wait per step) and read on the host
  before every checkpoint save and one step after each logging window closes, so the run
  raises naming the first non-finite step and never saves a non-finite state: the newest
  checkpoint is the last good one."""

  def __init__(self):
    self.good, self.marked = None, None
    self._update = jax.jit(FiniteCheck._last_good)

  @staticmethod
  def _last_good(good, step, loss, norm):
    good = step - 1 if good is None else good  # None: the run's first step
    return jnp.where((good == step - 1) & jnp.isfinite(loss) & jnp.isfinite(norm), step, good)

  def update(self, step: jax.Array, metrics: Mapping[str, jax.Array]) -> None:
    """After the step that brought the state to ``step``, with its metrics."""
    self.good = self._update(self.good, step, metrics["total"], metrics["grad_norm"])

  def mark(self, done: int) -> None:
    """Starts the copy to the host of the count after step ``done``, for ``check_marked``."""
    self.good.copy_to_host_async()
    self.marked = (done, self.good)

  def check_marked(self) -> None:
    """``check`` of the count ``mark`` kept."""
    self.check(*self.marked)

  def check(self, done: int, good: Optional[jax.Array] = None) -> None:
    """Raises ``FloatingPointError`` unless steps up to ``done`` were all finite."""
    good = int(jax.device_get(self.good if good is None else good))
    if good < done:
      raise FloatingPointError(
          f"step {good + 1}: the loss or the gradient norm is not finite; the run stops "
          f"without saving it (the newest checkpoint, if any, is of step {good} or earlier)")


# What a logging window reports besides the step's averaged metrics: throughput, and the model
# TFLOP/s each device achieved and its share of the device's peak (``flops.device_peak``).
THROUGHPUT = ("steps_per_second", "samples_per_second", "data_wait_fraction",
              "train/tflops_per_device", "train/mfu")


class WindowLog:
  """Writes each logging window's averages without stalling the device.

  When a window closes its values are still on the device: their copy to the host starts
  then (``copy_to_host_async``) and they are read after the next step has been queued, so the
  loop never waits for the device with nothing queued. Throughput is measured between those
  reads (each one follows the completion of its window's last step). ``step_flops``: model
  FLOPs of one step over all devices; ``peak``: one device's peak FLOP/s."""

  def __init__(self, writer: MetricWriter, batch_size: int, start_step: int,
               step_flops: float, peak: float):
    self.writer, self.batch_size = writer, batch_size
    self.step_flops, self.peak = step_flops, peak
    self.pending: Optional[Tuple[int, Dict[str, Any], float]] = None
    self.data_wait, self.last_step, self.last_time = 0.0, start_step, time.time()

  def close_window(self, step: int, values: Dict[str, Any]) -> None:
    for value in jax.tree.leaves(values):
      value.copy_to_host_async()
    self.pending = (step, values, self.data_wait)
    self.data_wait = 0.0

  def finish(self) -> Dict[str, float]:
    """Reads and writes the pending window; returns its metrics."""
    step, values, data_wait = self.pending
    metrics = {k: float(v) for k, v in jax.device_get(values).items()}
    now = time.time()
    elapsed, steps = now - self.last_time, step - self.last_step
    per_device = self.step_flops * steps / elapsed / jax.device_count()
    metrics.update(zip(THROUGHPUT, (steps / elapsed, steps * self.batch_size / elapsed,
                                    data_wait / elapsed, per_device / 1e12,
                                    per_device / self.peak)))
    self.writer.write(step, metrics)
    self.pending, self.last_step, self.last_time = None, step, now
    return metrics
