"""The benchmark's FLOP counter, peak table and result fields."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (fakeout_tiny, finetune_tiny, pretrain_base, pretrain_tiny,
                     voice_face_pretrain_tiny)
from havic_jax import bench, detectors, sharding
from havic_jax.training import builder, flops
from havic_jax.data.random_batches import synthetic_batches


def _flops(fn, *args):
  return flops.matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


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
           for k, v in next(training.random_batches(1)).items()}
  state = training.abstract_state()
  with training.scope():
    step = _flops(training.step, state, batch)
    forward = _flops(lambda p, b: training.loss_fn(p, b, jax.random.PRNGKey(0)), state.params,
                     batch)
  # The release embeds every patch, then drops the masked ones; here only the kept patches
  # are embedded: the patch embedding of the masked tokens (forward and its weight gradient)
  # is saved.
  cfg = training.model_config
  masked_video = cfg.video_tokens - batch["ids_keep_video"].shape[1]
  masked_audio = cfg.audio_tokens - batch["ids_keep_audio"].shape[1]
  saved = 2 * cfg.width * (masked_video * cfg.video_patch_dim + masked_audio * cfg.audio_patch_dim)
  assert (step + 2 * saved) / 1e12 == pytest.approx(0.94, rel=0.01)
  assert (forward + saved) / 1e12 == pytest.approx(0.62, rel=0.01)
  assert step / 1e12 < 0.94


def test_forward_mode_times_the_configs_detector():
  """A FakeOut config times FakeOut's window scorer (the eval binary's forward), not HAVIC's."""
  config = fakeout_tiny.get_config()
  result = bench.run(config, batch_size=8, steps=1, warmup=0, mode="forward", data="random")
  assert result["config"]["detector"] == "fakeout" and result["step_seconds"]["median"] > 0
  training = builder.build(config, sharding.make_mesh(config.mesh))
  scorer = detectors.window_scorer(training.model_config, "fakeout", "finetune",
                                   detectors.options_of(config))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in next(synthetic_batches(training.model_config, "finetune", 8, 0)).items()}
  with training.scope():
    flops = _flops(lambda p, b: scorer(p, b["video"], b["audio"]),
                   training.abstract_state().params, batch)
  assert result["model_tflop_per_sample"] == pytest.approx(flops / 8 / 1e12)


def test_peak_table():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("NVIDIA H200") == 989e12
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops("cpu") is None


@pytest.mark.parametrize("config", [pretrain_tiny.get_config(), finetune_tiny.get_config(),
                                    voice_face_pretrain_tiny.get_config()],
                         ids=["pretrain", "finetune", "voice_face_pretrain"])
def test_random_batches_are_the_pipelines_batches(config):
  """The bench's (and data.source="random"'s) batches have the keys, shapes and dtypes of
  ``batch_spec``, the pipeline's global batch: uint8 video, host masks, labels, identities."""
  training = builder.build(config, sharding.make_mesh(config.mesh))
  batch = training.global_batch(next(training.random_batches(config.batch_size)))
  spec = training.batch_spec(config.batch_size)
  assert {k: (v.shape, v.dtype, v.sharding) for k, v in batch.items()} == {
      k: (v.shape, v.dtype, v.sharding) for k, v in spec.items()}
  if "ids_keep_video" in batch:  # distinct kept tokens per segment, as the pipeline draws
    ids = np.asarray(batch["ids_keep_video"])
    assert all(len(set(row)) == len(row) for row in ids)


def test_one_compile_per_bench_process_and_the_end_to_end_rate(prepared_corpus, caplog):
  """The executable that reports the memory is the one that runs: the step compiles once
  (JAX logs every compilation of jit(train_step)); the timed batch is the pipeline's; with the
  pipeline, the end-to-end rate and its data wait are reported."""
  config = pretrain_tiny.get_config()
  config.unlock()
  config.data.source, config.data.path = "prepared", str(prepared_corpus)
  with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
    result = bench.run(config, batch_size=8, steps=2, warmup=1, mode="train", data="pipeline")
  compiles = [r for r in caplog.records
              if "Finished XLA compilation of jit(train_step)" in r.getMessage()]
  assert len(compiles) == 1
  training = builder.build(config, sharding.make_mesh(config.mesh))
  assert result["batch"] == {k: [list(v.shape), v.dtype.name]
                             for k, v in training.batch_spec(8).items()}
  assert result["batch"]["video"][1] == "uint8"
  end_to_end = result["end_to_end"]
  assert end_to_end["samples_per_second"] > 0 and 0 <= end_to_end["data_wait_fraction"] < 1
  assert result["attention"] == "xla" and result["compiled_memory_bytes"] > 0


def test_model_flops_count_the_matmuls_inside_fused_attention():
  """A fused attention kernel (here the TPU kernel, traced on this CPU) keeps its matmuls out
  of the program's equations; model FLOPs are counted on the same step with XLA attention."""
  def tiny(impl):
    config = pretrain_tiny.get_config()
    config.unlock()
    config.model.attention_impl = impl
    config.mesh.update(data=1)
    return builder.build(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
  fused, plain = tiny("pallas"), tiny("xla")
  state, batch = fused.abstract_state(), fused.batch_spec(2)
  traced = lambda training: flops.matmul_flops(
      training.step.trace(state, batch).jaxpr.jaxpr)
  with fused.scope():
    hidden = traced(fused)
  with plain.scope():
    counted = traced(plain)
  assert bench.model_flops(fused, "train", state, batch) == counted > hidden
