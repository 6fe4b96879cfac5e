"""The sharded train step: mesh independence, one compile, and learning on a fixed batch."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import finetune_tiny, pretrain_tiny
from havic_jax import sharding, train
from havic_jax.models.config import model_config_from
from havic_jax.models.havic import build_model
from havic_jax.optimizer import make_optimizer
from havic_jax.synthetic_batches import synthetic_batches
from havic_jax.train_step import create_sharded_state, jit_train_step, pretrain_loss_fn

# float32 on CPU: different meshes reduce in different orders.
MESH_TOLERANCE = dict(rtol=2e-4, atol=2e-6)


def run_steps(config, mesh_axes, devices, num_steps=2, counter=None):
  """``num_steps`` pretraining steps on a mesh; returns (params, metrics) on the host."""
  cfg = model_config_from(config.model, config.compat)
  model = build_model(cfg, "pretrain")
  optimizer, schedules = make_optimizer(config)
  loss_fn = pretrain_loss_fn(model, cfg, config)
  if counter is not None:
    inner = loss_fn

    def loss_fn(*args):
      counter.append(1)
      return inner(*args)
  mesh = sharding.make_mesh(mesh_axes, devices)
  rules = tuple(config.sharding_rules)
  batches = synthetic_batches(cfg, "pretrain", config.batch_size, seed=3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, shardings = create_sharded_state(model, cfg, "pretrain", optimizer,
                                            jax.random.PRNGKey(0), mesh, rules)
    step = jit_train_step(loss_fn, optimizer, schedules, shardings, mesh)
    for _ in range(num_steps):
      state, metrics = step(state, sharding.global_batch(next(batches), mesh))
  return jax.device_get(state.params), jax.device_get(metrics), state, shardings


@pytest.fixture(scope="module")
def single_device_run():
  return run_steps(pretrain_tiny.get_config(), {"data": 1}, jax.devices()[:1])


@pytest.mark.parametrize("mesh_axes", [{"data": 2, "fsdp": 4}, {"data": 2, "tensor": 4},
                                       {"data": 8}])
def test_same_step_on_one_and_eight_devices(single_device_run, mesh_axes):
  params_1, metrics_1, _, _ = single_device_run
  params_8, metrics_8, state, shardings = run_steps(pretrain_tiny.get_config(), mesh_axes,
                                                    jax.devices())
  for key in ("total", "rec_loss_video", "nce_loss", "cross_loss_audio", "grad_norm"):
    np.testing.assert_allclose(metrics_8[key], metrics_1[key], **MESH_TOLERANCE, err_msg=key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **MESH_TOLERANCE),
               params_8, params_1)
  # The state really is sharded as the rules say (not silently replicated).
  kernel = state.params["video_encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  spec = shardings.params["video_encoder"]["block_0"]["mlp"]["fc1"]["kernel"].spec
  if "fsdp" in mesh_axes:
    assert spec == jax.sharding.PartitionSpec("fsdp", None)
    assert kernel.addressable_shards[0].data.shape == (16, 256)
  if "tensor" in mesh_axes:
    assert spec == jax.sharding.PartitionSpec(None, "tensor")
    assert kernel.addressable_shards[0].data.shape == (64, 64)


def test_step_compiles_once():
  traces = []
  run_steps(pretrain_tiny.get_config(), {"data": 8}, jax.devices(), num_steps=3,
            counter=traces)
  assert len(traces) == 1


def fixed_batch_config(module, num_steps):
  config = module.get_config()
  config.unlock()
  config.num_steps = num_steps
  config.log_every = num_steps
  config.data.fixed_batch = True
  return config


def test_tiny_pretraining_overfits_a_fixed_batch(tmp_path):
  config = fixed_batch_config(pretrain_tiny, 200)
  first = fixed_batch_config(pretrain_tiny, 1)
  _, start = train.run(first, str(tmp_path / "first"))
  _, end = train.run(config, str(tmp_path / "run"))
  assert end["total"] <= 0.5 * start["total"], (start["total"], end["total"])


def test_tiny_finetuning_learns_fixed_labels(tmp_path):
  config = fixed_batch_config(finetune_tiny, 60)
  first = fixed_batch_config(finetune_tiny, 1)
  _, start = train.run(first, str(tmp_path / "first"))
  _, end = train.run(config, str(tmp_path / "run"))
  assert end["total"] < 0.5 * start["total"], (start["total"], end["total"])
