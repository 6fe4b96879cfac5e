"""The fixed sin-cos tables of the released state_dicts (spec §10) and how far a float32 copy
may be from the exact table.

A released state_dict stores some sin-cos position tables our model rebuilds instead of
loading; ``havic_jax.models.reference`` checks each against :class:`FixedTable`'s exact
(float64) values within :attr:`FixedTable.tolerance`, the difference float32 rounding explains.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

import numpy as np

from havic_jax.models import layers

# How far a float32 copy of a sin-cos table may be from the exact (float64) table. The release
# computes its angles in float32 as p·(1 / 10000^e) with e = 2k/D: the exponent, the power,
# the reciprocal and the product are each rounded (half a unit in the last place, relative
# 2^-24, each), the library's power may add about one unit of its own (torch's and NumPy's
# differ by one unit in some columns, by CPU), and the exponent's rounding moves the angle by
# at most ln(10000)·e·10000^-e ≤ 0.37 of a unit. That is under 2.5 float32 epsilons (2^-23) of
# relative angle error; FIXED_TABLE_ANGLE_EPS allows twice that. An angle error moves sin / cos
# by at most as much, and their own evaluation and rounding add FIXED_TABLE_VALUE_EPS epsilons.
# The largest angle of a table is its largest position (the k = 0 column has frequency 1), so a
# 1568-row video table allows (5·1567 + 2)·2^-23 ≈ 9.3e-4: a table shifted by one position,
# with sin and cos swapped or with another temperature differs by ~0.1 to 2.
FIXED_TABLE_ANGLE_EPS = 5
FIXED_TABLE_VALUE_EPS = 2
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class FixedTable:
  """A fixed sin-cos table of the reference, in its layout [1, N, width]: a 1-D table of N
  positions (grid ``(N,)``) or the 2-D audio table (grid ``(mel, time)``, mel-major)."""

  grid: Tuple[int, ...]
  width: int

  @functools.cached_property
  def exact(self) -> np.ndarray:
    """[1, N, width] float64."""
    if len(self.grid) == 1:
      return layers.sincos_1d(np.arange(self.grid[0]), self.width, np.float64)[None]
    return layers.sincos_2d(*self.grid, self.width, np.float64)[None]

  @property
  def max_angle(self) -> float:
    """The largest angle (radians): the largest position, at frequency 1."""
    return float(max(self.grid) - 1)

  @property
  def values(self) -> np.ndarray:
    """[1, N, D] float32: what a state_dict stores."""
    return self.exact.astype(np.float32)

  @property
  def tolerance(self) -> float:
    """The largest |difference| float32 rounding explains (see FIXED_TABLE_ANGLE_EPS)."""
    return (FIXED_TABLE_ANGLE_EPS * self.max_angle + FIXED_TABLE_VALUE_EPS) * FLOAT32_EPS

  def difference(self, value: np.ndarray) -> Tuple[float, Tuple[int, int]]:
    """The largest |value - exact| of a same-shaped ``value`` and its (position, column);
    inf where ``value`` is not finite."""
    diff = np.abs(np.asarray(value, np.float64) - self.exact)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    index = np.unravel_index(np.argmax(diff), diff.shape)
    return float(diff[index]), (int(index[-2]), int(index[-1]))
