"""HAVIC audio-visual deepfake detection in JAX/Flax.

``havic_jax.load_pretrained(DIR) -> (ModelConfig, params)`` reads an export directory
(``havic_jax.export``); it is imported on first use, so ``import havic_jax`` stays light.
"""


def __getattr__(name: str):
  if name == "load_pretrained":
    from havic_jax.checkpoints.exported import load_pretrained
    return load_pretrained
  raise AttributeError(f"module 'havic_jax' has no attribute {name!r}")
