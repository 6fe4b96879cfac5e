"""A bounded ring of batches already on the devices, so that the next step's host-to-device
transfer overlaps the running step.

The training loop and the benchmark take batches from :class:`DevicePrefetch`: it pulls host
batches from a source iterator, puts each on the devices (asynchronously) and keeps ``depth``
of them ahead of the step. Where the source is a checkpointable Grain iterator, the ring is
the checkpointed item in its place: :meth:`DevicePrefetch.get_state` is the source's position
at the first batch no step has taken yet, so a resumed run reads exactly the batches the
interrupted one had not used.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any, Callable, Deque, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

HostBatch = Mapping[str, np.ndarray]


class DevicePrefetch:
  """Iterator of device batches ``put(host batch)``, ``depth`` of them transferred ahead
  (``depth`` 0: each is put when asked for).

  ``wait_seconds`` accumulates the time spent waiting for the source's host batches."""

  def __init__(self, source: Iterator[HostBatch], put: Callable[[HostBatch], Dict[str, Any]],
               depth: int):
    if depth < 0:
      raise ValueError(f"data.device_prefetch must be >= 0, got {depth}")
    self.source, self.put, self.depth = source, put, depth
    self.checkpointable = hasattr(source, "get_state")
    # (device batch, the source's state before it was read), oldest first.
    self.ring: Deque[Tuple[Dict[str, Any], Optional[Any]]] = collections.deque()
    self.wait_seconds = 0.0

  def _pull(self) -> None:
    state = self.source.get_state() if self.checkpointable else None
    started = time.perf_counter()
    batch = next(self.source)
    self.wait_seconds += time.perf_counter() - started
    self.ring.append((self.put(batch), state))

  def __iter__(self) -> "DevicePrefetch":
    return self

  def __next__(self) -> Dict[str, Any]:
    if not self.ring:
      self._pull()
    batch, _ = self.ring.popleft()
    while len(self.ring) < self.depth:
      self._pull()
    return batch

  def peek(self) -> Dict[str, Any]:
    """The batch the next ``next()`` returns (transferred if it was not yet)."""
    if not self.ring:
      self._pull()
    return self.ring[0][0]

  # Grain's checkpoint handler (``grain.checkpoint.CheckpointSave``) saves
  # ``get_state().decode()`` of items that are not Grain dataset iterators; the text is the
  # JSON that restoring the source iterator itself reads.
  def get_state(self) -> bytes:
    """The source's position at the oldest batch of the ring (no step has taken it)."""
    state = self.ring[0][1] if self.ring else self.source.get_state()
    return json.dumps(state, indent=4).encode()

  def set_state(self, state: bytes) -> None:
    """Moves the source to ``state`` (:meth:`get_state`) and empties the ring."""
    self.source.set_state(json.loads(state.decode()))
    self.ring.clear()

  def start_prefetch(self) -> None:
    """Part of the iterator interface Grain's checkpoint handler calls after a restore."""
