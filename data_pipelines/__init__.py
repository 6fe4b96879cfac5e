"""Dataset preparation: raw videos -> ArrayRecord shards (see the project README)."""
