"""Scanned encoder blocks (``model.scan_layers``): the same function as the per-layer blocks on
the stacked parameters, and the layout conversions at the edges (export, init_from)."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pretrain_tiny
from configs.tiny import tiny_model
from havic_jax.checkpoints import exported, loading
from havic_jax import sharding
from havic_jax.models import stacking
from havic_jax.models.config import model_config_from
from havic_jax.models.havic_models import build_model, example_inputs
from havic_jax.training import builder

# Depth 4 tapped after layers 1, 2 and 4: groups of 1, 1 and 2 blocks.
DEEP = dataclasses.replace(model_config_from(tiny_model()), depth=4, tap_layers=(1, 2, 4),
                           decoder_depth=3)


def test_layer_groups_end_at_the_taps():
  assert stacking.layer_groups(12, (3, 6, 9, 12)) == [(0, 3), (3, 6), (6, 9), (9, 12)]
  assert stacking.layer_groups(4, (1, 2, 4)) == [(0, 1), (1, 2), (2, 4)]


def _inputs(cfg):
  """Random (video, audio) of the fine-tuning model, batch 2."""
  rng = np.random.default_rng(0)
  video, audio = example_inputs(cfg, False, 2)
  return (jnp.asarray(rng.uniform(size=video.shape), jnp.float32),
          jnp.asarray(rng.standard_normal(audio.shape), jnp.float32))


def test_scanned_blocks_compute_what_the_per_layer_blocks_do():
  """The fine-tuning model (both encoders), rematerialised, scanned against per-layer."""
  cfg = dataclasses.replace(DEEP, remat=True, remat_policy="dots_saveable")
  scanned_cfg = dataclasses.replace(cfg, scan_layers=True)
  model, scanned = build_model(cfg, "finetune"), build_model(scanned_cfg, "finetune")
  inputs = _inputs(cfg)
  params = nn.unbox(model.init(jax.random.key(0), *inputs)["params"])
  stacked = stacking.stack_layers(params, cfg.depth, cfg.tap_layers)
  # The stacked tree is exactly what the scanned model creates, with the layer axis named.
  boxed = scanned.init(jax.random.key(0), *inputs)["params"]
  assert (jax.tree.map(np.shape, stacked) == jax.tree.map(np.shape, nn.unbox(boxed)))
  kernel = boxed["video_encoder"]["blocks_2_4"]["block"]["mlp"]["fc1"]["kernel"]
  assert kernel.names[0] == stacking.LAYER_AXIS and kernel.value.shape[0] == 2
  assert "block_3" not in boxed["video_encoder"]

  def loss(apply_params, m):
    out = m.apply({"params": apply_params}, *inputs)
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(out)
               if jnp.issubdtype(x.dtype, jnp.floating))

  value, grads = jax.value_and_grad(loss)(params, model)
  scanned_value, scanned_grads = jax.value_and_grad(loss)(stacked, scanned)
  np.testing.assert_allclose(scanned_value, value, rtol=1e-5)
  # float32 sums in another order: differences relative to the largest gradient (some are 0
  # in exact arithmetic, e.g. a bias before a softmax)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(
      stacking.unstack_layers(scanned_grads))[0], jax.tree.leaves(grads)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_layouts_round_trip_and_exports_are_per_layer(tmp_path):
  scanned_cfg = dataclasses.replace(DEEP, scan_layers=True)
  model = build_model(scanned_cfg, "finetune")
  stacked = jax.device_get(nn.unbox(model.init(jax.random.key(1),
                                               *_inputs(DEEP))["params"]))
  per_layer = stacking.unstack_layers(stacked)
  assert sorted(k for k in per_layer["audio_encoder"] if k.startswith("block")) == [
      "block_0", "block_1", "block_2", "block_3"]
  np.testing.assert_array_equal(per_layer["video_encoder"]["block_3"]["attn"]["q_bias"],
                                stacked["video_encoder"]["blocks_2_4"]["block"]["attn"]
                                ["q_bias"][1])
  assert stacking.unstack_layers(per_layer) == per_layer  # per-layer trees pass through
  jax.tree.map(np.testing.assert_array_equal, stacking.to_layout(per_layer, scanned_cfg),
               stacked)
  # An export of the scanned run is per-layer and loads into either layout.
  model_dict = {f.name: getattr(scanned_cfg, f.name) for f in dataclasses.fields(scanned_cfg)}
  directory = exported.export_params(stacked, model_dict, "finetune", "reference",
                                   tmp_path / "export")
  description = json.loads((directory / exported.CONFIG_FILE).read_text())
  assert description["model"]["scan_layers"] is False
  checkpoint = loading.load(str(directory))
  cfg, loaded = checkpoint.model_config, checkpoint.params
  assert not cfg.scan_layers
  jax.tree.map(np.testing.assert_array_equal, loaded,
               {k: per_layer[k] for k in description["modules"]})
  jax.tree.map(np.testing.assert_array_equal, stacking.to_layout(loaded, scanned_cfg),
               {k: stacked[k] for k in description["modules"]})


def test_remat_policy_must_be_a_jax_policy():
  with pytest.raises(ValueError, match="remat_policy"):
    dataclasses.replace(DEEP, remat_policy="save_everything_please")


def test_stacked_parameters_shard_on_fsdp_with_the_layer_axis_replicated():
  config = pretrain_tiny.get_config()
  config.model.scan_layers = True
  training = builder.build(config, sharding.make_mesh({"data": 2, "fsdp": 4}))
  state, shardings = training.abstract_state(), training.shardings
  kernel = state.params["video_encoder"]["blocks_0_1"]["block"]["mlp"]["fc1"]["kernel"]
  spec = shardings.params["video_encoder"]["blocks_0_1"]["block"]["mlp"]["fc1"]["kernel"].spec
  assert kernel.shape == (1, 64, 256) and spec[:2] == (None, "fsdp")
  assert kernel.sharding.shard_shape(kernel.shape) == (1, 16, 256)
