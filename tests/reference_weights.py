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


def release_sincos_1d(positions: int, width: int, temperature: float = 10000.0,
                      power_ulps: int = 0) -> np.ndarray:
  """[positions, width] float32 as the release's ``SinCosPositionalEmbedding`` computes it, in
  float32 and in its order: e = (2·(k // 2)) / width, d = temperature^e, angle = p · (1 / d)
  (torch evaluates ``p / tensor`` as ``p * reciprocal(tensor)``), then sin (even columns) and
  cos (odd). ``power_ulps`` moves every d by that many float32 units, as the power function of
  another CPU may."""
  exponent = (2 * (np.arange(width) // 2)).astype(np.float32) / np.float32(width)
  denominator = np.power(np.float32(temperature), exponent)
  for _ in range(abs(power_ulps)):
    denominator = np.nextafter(denominator, np.float32(np.sign(power_ulps) * np.inf))
  angles = np.arange(positions, dtype=np.float32)[:, None] * (np.float32(1) / denominator)
  table = np.empty_like(angles)
  table[:, 0::2] = np.sin(angles[:, 0::2])
  table[:, 1::2] = np.cos(angles[:, 1::2])
  return table


def _release_grid_1d(half: int, positions: np.ndarray) -> np.ndarray:
  """The release's NumPy ``get_1d_sincos_pos_embed_from_grid``: omega = k / (half/2) in float32,
  omega = 1 / 10000^omega, angle = p · omega, interleaved sin / cos."""
  omega = np.arange(half // 2, dtype=np.float32)
  omega /= half // 2
  omega = 1.0 / (10000 ** omega)
  angles = positions.astype(np.float32).reshape(-1, 1) * omega
  table = np.zeros((angles.shape[0], half), np.float32)
  table[:, 0::2] = np.sin(angles)
  table[:, 1::2] = np.cos(angles)
  return table


def release_sincos_2d(mel: int, time: int, width: int) -> np.ndarray:
  """[mel·time, width] float32: the release's 2-D NumPy table in the mel-major token order (the
  first width/2 columns encode time, the last width/2 the mel band)."""
  f, t = np.meshgrid(np.arange(mel), np.arange(time), indexing="ij")
  return np.concatenate([_release_grid_1d(width // 2, t.reshape(-1)),
                         _release_grid_1d(width // 2, f.reshape(-1))], axis=1)


def release_tables(fixed: dict, power_ulps: int = 0) -> dict:
  """The release's float32 values [1, N, D] of every ``fixed_tables.FixedTable`` in ``fixed``."""
  out = {}
  for key, table in fixed.items():
    if len(table.grid) == 1:
      values = release_sincos_1d(table.grid[0], table.width, power_ulps=power_ulps)
    else:
      values = release_sincos_2d(*table.grid, table.width)
    out[key] = values[None]
  return out
