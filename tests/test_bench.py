"""The benchmark's FLOP counter, peak table and result fields."""

import jax
import jax.numpy as jnp
import pytest

from configs import fakeout_tiny, pretrain_base
from havic_jax import bench, detectors, sharding
from havic_jax.training import builder
from havic_jax.data.random_batches import synthetic_batches


def _flops(fn, *args):
  return bench.matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def test_matmul_flops_of_known_programs():
  a, b = jnp.ones((3, 4, 5)), jnp.ones((5, 6))
  assert _flops(lambda x, y: x @ y, a, b) == 2 * 3 * 4 * 5 * 6
  # a scan runs its body `length` times; a jit-wrapped matmul counts once
  body = lambda c, _: (c @ jnp.ones((5, 5)), None)
  assert _flops(lambda c: jax.lax.scan(body, c, None, length=7)[0], jnp.ones((2, 5))) == (
      7 * 2 * 2 * 5 * 5)
  assert _flops(jax.jit(lambda x, y: x @ y), a, b) == 2 * 3 * 4 * 5 * 6
  # a convolution: 2 × output elements × input features × window
  image, kernel = jnp.ones((1, 3, 8, 8)), jnp.ones((4, 3, 2, 2))
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), "VALID")
  assert _flops(conv, image, kernel) == 2 * (1 * 4 * 4 * 4) * 3 * 2 * 2
  # the backward pass of a matmul is two more matmuls
  loss = lambda x, y: jnp.sum(x @ y)
  assert _flops(jax.grad(loss, argnums=(0, 1)), a, b) == 3 * 2 * 3 * 4 * 5 * 6


@pytest.mark.long_run  # tracing the base model takes ~25 s
def test_the_base_pretraining_step_counts_the_release_flops():
  """Spec §13: 0.94 TFLOP per pretraining sample (forward 0.62), counted on the release."""
  training = builder.build(pretrain_base.get_config(), sharding.make_mesh(
      {"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in next(synthetic_batches(training.cfg, "pretrain", 1, 0)).items()}
  state = training.abstract_state()
  with training.scope():
    step = _flops(training.step, state, batch)
    forward = _flops(lambda p, b: training.loss_fn(p, b, jax.random.PRNGKey(0)), state.params,
                     batch)
  assert step / 1e12 == pytest.approx(0.94, rel=0.01)
  assert forward / 1e12 == pytest.approx(0.62, rel=0.01)


def test_forward_mode_times_the_configs_detector():
  """A FakeOut config times FakeOut's window scorer (the eval binary's forward), not HAVIC's."""
  config = fakeout_tiny.get_config()
  result = bench.run(config, batch_size=8, steps=1, warmup=0, mode="forward", data="random")
  assert result["config"]["detector"] == "fakeout" and result["step_seconds"]["median"] > 0
  training = builder.build(config, sharding.make_mesh(config.mesh))
  scorer = detectors.window_scorer(training.cfg, "fakeout", "finetune",
                                   detectors.options_of(config))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in next(synthetic_batches(training.cfg, "finetune", 8, 0)).items()}
  with training.scope():
    flops = _flops(lambda p, b: scorer(p, b["video"], b["audio"]),
                   training.abstract_state().params, batch)
  assert result["model_tflop_per_sample"] == pytest.approx(flops / 8 / 1e12)


def test_peak_table():
  assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert bench.peak_flops("NVIDIA H200") == 989e12
  assert bench.peak_flops("TPU v5 lite") == 197e12
  assert bench.peak_flops("cpu") is None
