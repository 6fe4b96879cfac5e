"""Reference state_dicts for tests: key/shape lists and the golden weight rule.

The rule (from the golden outputs' README): for every key ``k`` of shape ``s`` except the
fixed sin-cos tables, ``v = default_rng(crc32(k)).standard_normal(s)``; LayerNorm scales
(1-D ``*.weight``) are ``1 + 0.1 v``, everything else ``0.02 v``.
"""

import pathlib
import zlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data"


def read_key_shapes(name: str) -> dict:
  """``HAVIC_PT`` / ``HAVIC_FT`` / ... -> {key: shape} from ``tests/data/<name>.tsv``."""
  shapes = {}
  for line in (DATA / f"{name}.tsv").read_text().splitlines():
    key, shape = line.split("\t")
    shapes[key] = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
  return shapes


def golden_value(key: str, shape: tuple) -> np.ndarray:
  v = np.random.default_rng(zlib.crc32(key.encode())).standard_normal(shape).astype(np.float32)
  if len(shape) == 1 and key.endswith(".weight"):
    return 1.0 + 0.1 * v
  return 0.02 * v


def golden_state_dict(name: str, fixed_tables: dict) -> dict:
  """The golden weights of every key; fixed tables take ``fixed_tables`` (key -> array)."""
  return {key: (fixed_tables[key] if key in fixed_tables else golden_value(key, shape))
          for key, shape in read_key_shapes(name).items()}
