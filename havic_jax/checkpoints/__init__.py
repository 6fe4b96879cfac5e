"""Parameters on disk: Orbax checkpoints of training runs, exports, released state_dicts."""
