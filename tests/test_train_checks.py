"""The training loop fails early and loudly: a non-finite loss stops it without saving, and a
batch that cannot fit the device stops it before the first step."""

import re

import jax
import numpy as np
import pytest

from configs import pretrain_tiny
from havic_jax.training import builder, loop
from havic_jax.checkpoints import loading, runs


def tiny_run(num_steps):
  config = pretrain_tiny.get_config()
  config.unlock()
  config.num_steps, config.log_every, config.image_every = num_steps, 2, 0
  config.data.source = "random"
  config.checkpoint.every_steps = 1
  return config


def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                             monkeypatch):
  """NaN audio in the 4th batch: the run raises naming step 4, and the newest checkpoint is
  step 3's, with finite parameters."""
  random_batches = builder.Training.random_batches

  def planted(*args, **kwargs):
    for index, batch in enumerate(random_batches(*args, **kwargs)):
      yield dict(batch, audio=np.full_like(batch["audio"], np.nan)) if index == 3 else batch
  monkeypatch.setattr(builder.Training, "random_batches", planted)
  with pytest.raises(FloatingPointError, match=r"^step 4: the loss or the gradient norm is "
                                               r"not finite"):
    loop.run(tiny_run(8), str(tmp_path))
  directory = tmp_path / runs.CHECKPOINT_DIR
  assert max(int(p.name) for p in directory.iterdir() if p.name.isdigit()) == 3
  params = loading.load(str(tmp_path)).params
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_a_batch_that_cannot_fit_fails_before_the_first_step(tmp_path, monkeypatch):
  """A device that reports 1 MiB: the compiled step needs more, and the run stops before any
  step with the batch, the bytes needed and the capacity."""
  monkeypatch.setattr(builder, "device_capacity", lambda device: 2 ** 20)
  with pytest.raises(ValueError, match="does not fit") as raised:
    loop.run(tiny_run(2), str(tmp_path))
  found = re.match(r"batch_size 8 does not fit: the train step needs (\d+) bytes .* per "
                   r"device, the device has 1048576 bytes", str(raised.value))
  assert found and int(found.group(1)) > 2 ** 20
  directory = tmp_path / runs.CHECKPOINT_DIR
  assert not any(p.name.isdigit() for p in directory.iterdir()) if directory.exists() else True


def test_each_step_runs_one_device_program(tmp_path, monkeypatch):
  """Counted over the steps of a run (6 steps against 2, one logging window each, no
  checkpoint in between; the old loop's hooks dispatched two programs a step): the compiled train step is the only program a step dispatches; the
  hooks (finiteness check, logging window) add none per step, neither jitted nor eager."""
  calls = {"step": 0, "jit": 0, "eager": 0}
  compiled_call = jax.stages.Compiled.__call__

  def counted_step(self, *args, **kwargs):
    calls["step"] += 1
    return compiled_call(self, *args, **kwargs)

  jit = jax.jit

  def counted_jit(fun, *args, **kwargs):
    jitted = jit(fun, *args, **kwargs)

    def call(*call_args, **call_kwargs):
      calls["jit"] += 1
      return jitted(*call_args, **call_kwargs)
    call.trace, call.lower = jitted.trace, jitted.lower
    return call

  from jax._src import dispatch
  apply_primitive = dispatch.apply_primitive

  def counted_primitive(*args, **kwargs):
    calls["eager"] += 1
    return apply_primitive(*args, **kwargs)
  monkeypatch.setattr(jax.stages.Compiled, "__call__", counted_step)
  monkeypatch.setattr(jax, "jit", counted_jit)
  monkeypatch.setattr(dispatch, "apply_primitive", counted_primitive)
  counts = []
  for run, steps in enumerate((2, 2, 6)):  # the first run also measures the CPU's peak once
    config = tiny_run(steps)
    config.log_every, config.checkpoint.every_steps = steps, steps
    for key in calls:
      calls[key] = 0
    loop.run(config, str(tmp_path / str(run)))
    counts.append(dict(calls))
  added = {key: counts[2][key] - counts[1][key] for key in calls}
  assert added == {"step": 4, "jit": 0, "eager": 0}, counts
