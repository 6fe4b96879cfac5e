"""Scalar metrics to stdout (a progress line with ETA) and a JSONL file, from process 0."""

from __future__ import annotations

import datetime
import json
import pathlib
import time
from typing import Mapping, Optional

import jax


class MetricWriter:
  """Writes ``{"step": s, **scalars}`` lines to ``<workdir>/metrics.jsonl`` and prints a
  progress line. Does nothing on processes other than 0."""

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self.start_step = start_step
    self.start_time = time.time()
    self.path: Optional[pathlib.Path] = None
    if self.active:
      directory = pathlib.Path(workdir)
      directory.mkdir(parents=True, exist_ok=True)
      self.path = directory / "metrics.jsonl"

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    done = step - self.start_step
    elapsed = time.time() - self.start_time
    eta = elapsed / done * (self.total_steps - step) if done > 0 else 0.0
    shown = " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
    print(f"step {step}/{self.total_steps} | {shown} | "
          f"ETA {datetime.timedelta(seconds=round(eta))}", flush=True)
