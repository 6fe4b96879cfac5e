"""HAVIC audio-visual deepfake detection in JAX/Flax.

``havic_jax.load(SOURCE) -> Checkpoint(model_config, stage, params, description, config)``
reads an export directory (``havic_jax.export``), a training workdir or a released state_dict file
(``havic_jax.checkpoints.loading``); ``havic_jax.load_pretrained(SOURCE) -> (ModelConfig,
params)`` is its short form for downstream fine-tuning. Both are imported on first use, so
``import havic_jax`` stays light.
"""

PUBLIC = ("load", "load_pretrained")


def __getattr__(name: str):
  if name in PUBLIC:
    from havic_jax.checkpoints import loading
    return getattr(loading, name)
  raise AttributeError(f"module 'havic_jax' has no attribute {name!r}")
