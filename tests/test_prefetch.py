"""The device-prefetch ring: the source's batches in order, ``depth`` of them on the devices
ahead of the step, and a checkpointed position that is the first batch no step took; the
training loop with the ring resumes bit-identically."""

import json

import grain
import jax
import numpy as np
import pytest

from configs import pretrain_tiny
from havic_jax.checkpoints import loading
from havic_jax.training import hooks, loop, prefetch


def source():
  """A checkpointable Grain iterator of batches {"x": [4] int} counting up from 0."""
  return iter(grain.MapDataset.range(1000).batch(4).map(lambda x: {"x": x})
              .to_iter_dataset())


class Counting:
  """``put`` that records how many batches were put."""

  def __init__(self):
    self.count = 0

  def __call__(self, batch):
    self.count += 1
    return {k: jax.device_put(v) for k, v in batch.items()}


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_the_ring_keeps_depth_batches_ahead_and_checkpoints_the_first_untaken(depth):
  put = Counting()
  ring = prefetch.DevicePrefetch(source(), put, depth)
  taken = [int(next(ring)["x"][0]) for _ in range(5)]
  assert taken == [0, 4, 8, 12, 16]
  assert put.count == 5 + depth  # `depth` batches transferred ahead of the step
  state = ring.get_state()
  resumed = prefetch.DevicePrefetch(source(), Counting(), depth)
  resumed.set_state(state)
  assert [int(next(resumed)["x"][0]) for _ in range(3)] == [20, 24, 28]
  # The same bytes restore the Grain iterator itself (what runs.restore does).
  plain = source()
  plain.set_state(json.loads(state.decode()))
  assert int(next(plain)["x"][0]) == 20


def test_peek_is_the_next_batch():
  ring = prefetch.DevicePrefetch(source(), Counting(), 2)
  assert int(ring.peek()["x"][0]) == 0 and int(next(ring)["x"][0]) == 0
  assert int(ring.peek()["x"][0]) == 4


def run_config(depth, prepared):
  config = pretrain_tiny.get_config()
  config.unlock()
  config.num_steps, config.log_every, config.image_every = 4, 1, 0
  config.data.source, config.data.path = "prepared", str(prepared)
  config.data.device_prefetch = depth
  return config


def test_the_loop_with_the_ring_resumes_bit_identically(tmp_path, prepared_corpus, monkeypatch):
  """4 steps without the ring, against 4 steps with the ring two batches ahead, stopped after
  step 2 (a preemption notice: the checkpoint holds the pipeline position the ring recorded)
  and resumed: the same parameters, bit for bit."""
  # In one process, without the persistent compilation cache: loading XLA:CPU executables
  # from it in the process that wrote them has aborted resumed runs
  # (cli.enable_compilation_cache).
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    loop.run(run_config(0, prepared_corpus), str(tmp_path / "reference"))
    interrupted = str(tmp_path / "interrupted")
    with monkeypatch.context() as patch:
      patch.setattr(hooks.Preemption, "reached", lambda self, step: step == 2)
      state, _ = loop.run(run_config(2, prepared_corpus), interrupted)
    assert int(state.step) == 2
    loop.run(run_config(2, prepared_corpus), interrupted)
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
  jax.tree.map(np.testing.assert_array_equal, loading.load(str(tmp_path / "reference")).params,
               loading.load(interrupted).params)
