"""What the training loop does around its steps, one :class:`Hook` per job, each called by
``loop.train_steps`` before and after every step in the order the loop lists them: the
finiteness check (:class:`FiniteCheck`), the logging window (:class:`WindowLog`, with
throughput and chip use), the profiler window (:class:`Profile`) and checkpoints with the
preemption decision (:class:`Checkpoint`, :class:`Preemption`); validation and images are in
``training.validation``.

clu's ``periodic_actions.PeriodicAction`` is called with the step number only; these hooks
also need the step's state, batch and metrics (:class:`StepEnd`), and one hook's result feeds
another (the validation scores a checkpoint keeps, the stop a preemption asks for).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import logging

from havic_jax import storage
from havic_jax.checkpoints import runs
from havic_jax.training.metric_writer import MetricWriter, window_means


@dataclasses.dataclass
class StepEnd:
  """A step that just ran, as the hooks see it.

  done: the steps done (the state's step); last: the run's last step; state, batch (global,
  on the devices) and metrics (on the devices) of the step. Hooks set ``scores`` (this step's
  validation, ``eval/...``) and ``stop`` (save and end the run)."""

  done: int
  last: bool
  state: Any
  batch: Mapping[str, jax.Array]
  metrics: Mapping[str, jax.Array]
  scores: Optional[Dict[str, float]] = None
  stop: bool = False


class Hook:
  """One job of the loop: ``before_step(step)`` before step ``step`` (0-based) runs,
  ``after_step(end)`` after it, ``end_run()`` once after the run's last step or a stop."""

  def before_step(self, step: int) -> None:
    pass

  def after_step(self, end: StepEnd) -> None:
    pass

  def end_run(self) -> None:
    pass


def due(done: int, every: int, last: bool) -> bool:
  """Whether a job every ``every`` steps (0: never) runs after step ``done`` (and after the
  run's ``last`` step)."""
  return bool(every) and (done % every == 0 or last)


class Preemption:
  """The run's one decision to stop for a preemption notice (SIGTERM): every process saves
  the same step, then exits 0. A context manager: the SIGTERM handler the run found is put
  back at its end.

  A single process sets a flag from its own SIGTERM handler. Processes joined by
  ``jax.distributed`` decide together: JAX's preemption service (on by default,
  ``jax_enable_preemption_service``) takes SIGTERM on any process and agrees with the others
  on one step, which Orbax's ``reached_preemption`` reports on every process at once. There no
  Python handler is installed: it would replace the service's, and the process that got the
  signal would start a save (a collective) that the others never join."""

  def __init__(self, manager: Any):
    self.manager, self.raised = manager, False
    self.local = jax.process_count() == 1

  def __enter__(self) -> "Preemption":
    if self.local:
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    if self.local:
      signal.signal(signal.SIGTERM, self.previous)

  def _handle(self, signum, frame):
    logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self.raised = True

  def reached(self, step: int) -> bool:
    """Whether the run saves and stops after ``step``; called after every step, on every
    process."""
    return self.raised if self.local else self.manager.reached_preemption(step)


class Profile(Hook):
  """A ``jax.profiler`` trace of ``config.profile.steps`` steps from ``start_step`` (-1: none)
  on process 0, written to ``config.profile.dir`` (default WORKDIR/profile; open it with
  TensorBoard's profile plugin or Perfetto, ``tensorboard --logdir=DIR``)."""

  def __init__(self, options: Any, workdir: str):
    self.start, self.steps = int(options.start_step), int(options.steps)
    self.directory = options.dir or os.fspath(storage.path(workdir) / "profile")
    self.active = self.start >= 0 and jax.process_index() == 0
    self.running = False

  def before_step(self, step: int) -> None:
    if self.active and step == self.start:
      logging.info("profiling steps %d-%d to %s", self.start + 1, self.start + self.steps,
                   self.directory)
      jax.profiler.start_trace(self.directory)
      self.running = True

  def after_step(self, end: StepEnd) -> None:
    """Stops the trace once its steps have run on the device."""
    if self.running and (end.done == self.start + self.steps or end.last):
      jax.block_until_ready(end.state)
      jax.profiler.stop_trace()
      self.running = False


class FiniteCheck(Hook):
  """Stops a diverged run. Each step's loss (``total``) and gradient norm stay on the device
  until they are read on the host (no computation, no wait per step): before every checkpoint
  save (:meth:`check`) and one step after each logging window closes (every ``log_every``
  steps), so the run raises naming the first non-finite step and never saves a non-finite
  state: the newest checkpoint is the last good one."""

  def __init__(self, log_every: int):
    self.log_every = log_every
    self.unread: List[Tuple[int, jax.Array, jax.Array]] = []  # (step, loss, norm), in order
    self.marked: Optional[int] = None

  def after_step(self, end: StepEnd) -> None:
    self.unread.append((end.done, end.metrics["total"], end.metrics["grad_norm"]))
    self.end_run()
    if due(end.done, self.log_every, end.last):
      for _, loss, norm in self.unread:
        loss.copy_to_host_async()
        norm.copy_to_host_async()
      self.marked = end.done

  def end_run(self) -> None:
    if self.marked is not None:
      self.check(self.marked)

  def check(self, done: int) -> None:
    """Raises ``FloatingPointError`` unless steps up to ``done`` were all finite."""
    read = [entry for entry in self.unread if entry[0] <= done]
    self.unread = self.unread[len(read):]
    self.marked = None
    if not read:
      return
    steps, losses, norms = zip(*read)
    losses, norms = jax.device_get((list(losses), list(norms)))
    for step, loss, norm in zip(steps, losses, norms):
      if not (np.isfinite(loss) and np.isfinite(norm)):
        raise FloatingPointError(
            f"step {step}: the loss or the gradient norm is not finite; the run stops without "
            f"saving it (the newest checkpoint, if any, is of step {step - 1} or earlier)")


# What a logging window reports besides the step's averaged metrics: throughput, and the model
# TFLOP/s each device achieved and its share of the device's peak (``flops.device_peak``).
THROUGHPUT = ("steps_per_second", "samples_per_second", "data_wait_fraction",
              "train/tflops_per_device", "train/mfu")


class WindowLog(Hook):
  """Writes the averages of each window of ``log_every`` steps without stalling the device.

  The step metrics are kept on the device until the window closes, then averaged there in one
  call (``metric_writer.window_means``), but for the ``schedules`` (learning rates and the
  like), logged at the window's last step. When a window closes its
  values are still on the device: their copy to the host starts then
  (``copy_to_host_async``) and they are read after the next step has been queued, so the
  loop never waits for the device with nothing queued. Throughput is measured between those
  reads (each one follows the completion of its window's last step); the data wait is the
  growth of ``batches.wait_seconds``. ``step_flops``: model FLOPs of one step over all
  devices; ``peak``: one device's peak FLOP/s. :attr:`metrics`: the last window written."""

  def __init__(self, writer: MetricWriter, batches: Any, log_every: int, batch_size: int,
               schedules: Sequence[str], start_step: int, step_flops: float, peak: float):
    self.writer, self.batches, self.log_every = writer, batches, log_every
    self.batch_size, self.schedules = batch_size, tuple(schedules)
    self.step_flops, self.peak = step_flops, peak
    self.window: List[Mapping[str, jax.Array]] = []  # the metrics of its steps so far
    self.pending: Optional[Tuple[int, Dict[str, Any], float]] = None
    self.metrics: Dict[str, float] = {}
    self.waited, self.last_step, self.last_time = batches.wait_seconds, start_step, time.time()
    self._means = jax.jit(lambda steps, last: dict(window_means(steps), **last))

  def after_step(self, end: StepEnd) -> None:
    self.end_run()  # the last window's values, read while this step runs
    self.window.append({k: v for k, v in end.metrics.items() if k not in self.schedules})
    if due(end.done, self.log_every, end.last):
      values = self._means(self.window, {k: end.metrics[k] for k in self.schedules})
      for value in jax.tree.leaves(values):
        value.copy_to_host_async()
      waited = self.batches.wait_seconds
      self.pending, self.waited = (end.done, values, waited - self.waited), waited
      self.window = []

  def end_run(self) -> None:
    """Reads and writes the pending window, if any."""
    if self.pending is None:
      return
    step, values, data_wait = self.pending
    metrics = {k: float(v) for k, v in jax.device_get(values).items()}
    now = time.time()
    elapsed, steps = now - self.last_time, step - self.last_step
    per_device = self.step_flops * steps / elapsed / jax.device_count()
    metrics.update(zip(THROUGHPUT, (steps / elapsed, steps * self.batch_size / elapsed,
                                    data_wait / elapsed, per_device / 1e12,
                                    per_device / self.peak)))
    self.writer.write(step, metrics)
    self.pending, self.last_step, self.last_time, self.metrics = None, step, now, metrics


class Checkpoint(Hook):
  """Saves the state (and the input position of ``batches`` where it is checkpointable)
  every ``every_steps`` steps, at the run's last step, at each validation (with its scores,
  for the best-checkpoint policy) and at a preemption notice, which also stops the run. Every
  save follows a finiteness check, and the metric log holds every step up to it."""

  def __init__(self, manager: Any, every_steps: int, batches: Any, preemption: Preemption,
               finite: FiniteCheck, log: WindowLog):
    self.manager, self.every_steps, self.preemption = manager, every_steps, preemption
    self.batches = batches if batches.checkpointable else None
    self.finite, self.log = finite, log

  def after_step(self, end: StepEnd) -> None:
    preempted = self.preemption.reached(end.done)
    if due(end.done, self.every_steps, end.last) or preempted or end.scores:
      self.finite.check(end.done)
      runs.save(self.manager, end.done, end.state, self.batches, end.scores,
                force=end.last or preempted)
      self.log.end_run()
      self.log.writer.flush()
    if preempted:
      logging.warning("stopped at step %d after a preemption notice", end.done)
      end.stop = True
