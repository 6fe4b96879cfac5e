"""HAVIC audio-visual deepfake detection in JAX/Flax.

``havic_jax.load(SOURCE) -> Checkpoint(cfg, stage, params, description, config)`` reads an
export directory (``havic_jax.export``), a training workdir or a released state_dict file
(``havic_jax.checkpoints.loading``); it is imported on first use, so ``import havic_jax`` stays
light.
"""


def __getattr__(name: str):
  if name == "load":
    from havic_jax.checkpoints.loading import load
    return load
  raise AttributeError(f"module 'havic_jax' has no attribute {name!r}")
