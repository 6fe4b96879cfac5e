"""The two parameter layouts of an encoder trunk, and the conversion between them.

With ``ModelConfig.scan_layers`` the blocks between two tap layers run as one ``nn.scan``
(compiled once per group instead of once per layer), so their parameters are stacked on a
leading layer axis: ``blocks_3_6/block/attn/qkv/kernel`` [3, D, 3D] holds layers 3, 4, 5.
The per-layer layout (``block_3/attn/qkv/kernel`` [D, 3D]) is the canonical one: exports, the
reference-weight converters and ``init_from`` speak it; checkpoints keep the layout of the run
that wrote them. An encoder is recognised as a subtree holding ``patch_embed`` and ``norm``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

LAYER_AXIS = "layers"  # logical name of the stacked axis (replicated by the sharding rules)
SCANNED_BLOCK = "block"  # the scanned block's name inside a group
GROUP_PREFIX = "blocks_"


def layer_groups(depth: int, tap_layers: Tuple[int, ...]) -> List[Tuple[int, int]]:
  """[(first, end)] block index ranges that end at each tap layer, e.g. depth 12, taps
  (3, 6, 9, 12) -> [(0, 3), (3, 6), (6, 9), (9, 12)]."""
  ends = sorted(set(tap_layers) | {depth})
  return list(zip([0] + ends[:-1], ends))


def group_name(first: int, end: int) -> str:
  return f"{GROUP_PREFIX}{first}_{end}"


def _is_encoder(tree: Any) -> bool:
  return isinstance(tree, Mapping) and "patch_embed" in tree and "norm" in tree


def _map_encoders(tree: Any, convert) -> Any:
  if _is_encoder(tree):
    return convert(tree)
  if isinstance(tree, Mapping):
    return {k: _map_encoders(v, convert) for k, v in tree.items()}
  return tree


def _stack(xs: List[Any]) -> Any:
  return jnp.stack(xs) if isinstance(xs[0], jax.Array) else np.stack(xs)


def stack_layers(params: Mapping[str, Any], depth: int, tap_layers: Tuple[int, ...]
                 ) -> Dict[str, Any]:
  """Per-layer encoder blocks (``block_i``) -> stacked groups (``blocks_a_b/block``); trees
  without per-layer blocks are returned as they are. Other modules are left alone."""
  def convert(encoder):
    if "block_0" not in encoder:
      return dict(encoder)
    out = {k: v for k, v in encoder.items() if not k.startswith("block_")}
    for first, end in layer_groups(depth, tap_layers):
      blocks = [encoder[f"block_{i}"] for i in range(first, end)]
      out[group_name(first, end)] = {SCANNED_BLOCK: jax.tree.map(lambda *xs: _stack(xs),
                                                                 *blocks)}
    return out
  return _map_encoders(params, convert)


def unstack_layers(params: Mapping[str, Any]) -> Dict[str, Any]:
  """Stacked groups (``blocks_a_b/block``) -> per-layer ``block_i``, the inverse of
  :func:`stack_layers` (the group names carry the layer ranges); per-layer trees are returned
  as they are."""
  def convert(encoder):
    out = {k: v for k, v in encoder.items() if not k.startswith(GROUP_PREFIX)}
    for name, group in encoder.items():
      if name.startswith(GROUP_PREFIX):
        first, end = (int(n) for n in name[len(GROUP_PREFIX):].split("_"))
        for i in range(first, end):
          out[f"block_{i}"] = jax.tree.map(lambda x, j=i - first: x[j], group[SCANNED_BLOCK])
    return out
  return _map_encoders(params, convert)


def to_layout(params: Mapping[str, Any], model_config: Any) -> Dict[str, Any]:
  """``params`` in either layout -> the layout of ``model_config`` (a ``ModelConfig``)."""
  canonical = unstack_layers(params)
  return stack_layers(canonical, model_config.depth,
                      model_config.tap_layers) if model_config.scan_layers else canonical
