"""What a compiled step's HLO text moves between chips: the collectives within a slice and the
transfers across slices, per step and per chip (ops in a loop body once per iteration).

``havic_jax.aot`` reports them for TPU topologies compiled on any host.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Iterator, List, Sequence, Tuple

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


def _computations(hlo: str) -> Dict[str, List[str]]:
  """HLO text -> {computation name: its instruction lines}; the entry computation is
  "ENTRY"."""
  computations: Dict[str, List[str]] = {}
  current = None
  for line in hlo.splitlines():
    header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = "ENTRY" if header.group(1) else header.group(2)
      computations[current] = []
    elif line.startswith("}"):
      current = None
    elif current is not None and " = " in line:
      computations[current].append(line)
  return computations


def _trip_count(line: str, computations: Dict[str, List[str]]) -> int:
  """Iterations of the while loop on ``line``: XLA's ``known_trip_count`` where given, else
  the bound of its condition ``counter < N`` (a scan's counter runs 0, 1, ..., N − 1); 1 if
  neither is there."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
  if known:
    return int(known.group(1))
  condition = re.search(r"\bcondition=%([\w.\-]+)", line)
  lines = computations.get(condition.group(1), ()) if condition else ()
  bounds = [re.search(r"constant\((\d+)\)", l) for l in lines]
  bounds = [int(b.group(1)) for b in bounds if b]
  less_than = any("compare(" in l and "direction=LT" in l for l in lines)
  return bounds[0] if less_than and len(bounds) == 1 else 1


def _executions(computations: Dict[str, List[str]]) -> Dict[str, int]:
  """How many times each computation runs per run of the entry: a while loop's body times
  its trip count, everything else called (fusions, calls, branches: each counted, an upper
  bound) as often as its caller."""
  counts: Dict[str, int] = {}

  def visit(name: str, times: int) -> None:
    counts[name] = counts.get(name, 0) + times
    for line in computations.get(name, ()):
      for callee in re.findall(r"\b(?:calls|to_apply)=%([\w.\-]+)", line):
        visit(callee, times)
      for branches in re.findall(r"\bbranch_computations=\{([^}]*)\}", line):
        for callee in re.findall(r"%([\w.\-]+)", branches):
          visit(callee, times)
      body = re.search(r"\bbody=%([\w.\-]+)", line)
      if body:
        visit(body.group(1), times * _trip_count(line, computations))
  visit("ENTRY", 1)
  return counts


def _array_bytes(arrays: Sequence[Tuple[str, str]]) -> List[int]:
  """Bytes of each (dtype, "d0,d1,...") array type (``_SHAPE`` matches)."""
  return [_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
          for dtype, dims in arrays]


def _group_size(line: str) -> int:
  """Devices per replica group of a collective: ``replica_groups={{0,1},{2,3}}``, the iota
  form ``[groups,size]<=[...]`` or the mesh form ``mesh['axis_0'=1,'axis_1'=4] {'axis_1'}``."""
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", line)
  if mesh:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
    return math.prod(int(sizes[axis]) for axis in re.findall(r"'([^']+)'", mesh.group(2)))
  iota = re.search(r"replica_groups=\[\d+,(\d+)\]", line)
  if iota:
    return int(iota.group(1))
  explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
  return len(explicit.group(1).split(",")) if explicit else 1


def collectives(hlo: str) -> Dict[str, Dict[str, int]]:
  """{kind: {"count", "bytes"}} of the collectives of a compiled module's HLO text, per step
  and per chip: an op inside a loop counts once per iteration. In a multi-slice program these
  are the collectives within a slice; :func:`dcn_transfers` gives those across slices. Bytes are those of the whole
  collected buffer on one chip: the gathered output of an all-gather, the reduced input of a
  reduce-scatter, the array of the others. The TPU compiler writes a reduce-scatter as an
  all-reduce and a slice inside a computation named ``all-reduce-scatter*``; those count as
  reduce-scatters."""
  totals = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
  pattern = re.compile(r" = (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(")
  for name, line, times in _executed_lines(hlo):
    op = pattern.search(line)
    if op:
      kind, arrays = op.group(2), _SHAPE.findall(op.group(1))
      if op.group(3):  # "-start" ops return (operands, outputs[, u32[] contexts])
        arrays = [a for a in arrays if a[1] or a[0] not in ("u32", "s32")][-1:]
      size = sum(_array_bytes(arrays))
      if kind == "reduce-scatter":
        size *= _group_size(line)
      elif kind == "all-reduce" and name.startswith("all-reduce-scatter"):
        kind = "reduce-scatter"
      totals[kind]["count"] += times
      totals[kind]["bytes"] += times * size
  return totals


def _executed_lines(hlo: str) -> Iterator[Tuple[str, str, int]]:
  """(computation name, HLO line, times it runs per step) of every line of a compiled
  module's computations that run (a loop body once per iteration)."""
  computations = _computations(hlo)
  executions = _executions(computations)
  for name, lines in computations.items():
    times = executions.get(name, 0)
    if times:
      for line in lines:
        yield name, line, times


# A send to the Megascale runtime: (dtype, dims, transfer type).
_DCN_SEND = re.compile(r" = \((\w+)\[([\d,]*)\].*? send\("
                       r".*_xla_megascale_transfer_type=\"(\w+)\"")


def dcn_transfers(hlo: str) -> Dict[str, Dict[str, Any]]:
  """{transfer type: {"count", "bytes"}} of what a multi-slice program sends across slices
  (over the data-centre network: the TPU compiler's host-transfer ``send`` ops to the
  Megascale runtime, ``ALL_REDUCE``, ``ALL_GATHER``, ...), per step and per chip. Empty for
  a one-slice program."""
  totals: Dict[str, Dict[str, Any]] = {}
  for _, line, times in _executed_lines(hlo):
    send = _DCN_SEND.search(line)
    if send:
      entry = totals.setdefault(send.group(3), {"count": 0, "bytes": 0})
      entry["count"] += times
      entry["bytes"] += times * _array_bytes([send.group(1, 2)])[0]
  return totals


