"""Metrics, images and text of a run: stdout, JSONL, PNG/TXT files and TensorBoard events.

Only process 0 writes; on every other process the writer does nothing. Files under the
work directory:

  metrics.jsonl                      one ``{"step": s, key: value, ...}`` line per ``write``
  tensorboard/events.out.tfevents.*  scalars, images and text (tensorboardX, no TensorFlow)
  images/step_{step:08d}/{key}.png   one PNG per ``write_images`` entry
  {name}.txt                         one file per ``write_text``

Keys: a ``prefix`` given to a write call is joined as ``f"{prefix}/{name}"`` and the result is
the JSONL key, the TensorBoard tag and the PNG path alike (``write(s, {"auc": 0.9},
prefix="eval")`` -> JSONL ``"eval/auc"``, tag ``eval/auc``). Without a prefix the bare name is
used, which is how the training loop logs its scalars (``total``, ``grad_norm``, ...). Text
``name`` has the tag ``{name}/text_summary`` (tensorboardX's text summary).

The work directory may be a ``gs://`` URI (:mod:`havic_jax.storage`): the PNG and TXT files
go through ``etils.epath``; JSONL lines and events are kept in memory and written at each
flush (``FLUSH_SECONDS``, and :meth:`MetricWriter.flush` / ``close``), the lines appended to
``metrics.jsonl`` (``storage.append_text``: a Cloud Storage compose), the events as one new
event file per flush (TensorBoard reads every event file of a directory in name order), so a
log line costs the same at hour 100 as at the start.

A resumed run (``start_step`` > 0) first drops the lines of steps after ``start_step`` that
the run it resumes wrote after its last checkpoint, and writes a TensorBoard ``SessionLog``
START at ``start_step`` (TensorBoard then discards the older events of later steps): the log
holds every step once, in order.

Events are built with ``tensorboardX.summary`` and written synchronously by its
``EventsWriter``: ``SummaryWriter`` hands them to a writer thread whose queue its ``flush()``
does not drain, so :meth:`MetricWriter.flush` could not promise they are on disk.

Aggregation: :func:`train_metrics_from` turns one step's scalars into a ``clu.metrics``
collection of averages; :func:`window_means` merges those of a logging window's steps and
computes each scalar's mean over the window, in one jittable call.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import flax.linen as nn
import jax
import numpy as np
from clu import metrics as clu_metrics
from clu import parameter_overview as clu_parameter_overview
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog

from havic_jax import storage

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
IMAGES_DIR = "images"
FLUSH_SECONDS = 30.0  # a write call flushes the event file when the last flush is older


def _key(name: str, prefix: Optional[str]) -> str:
  return f"{prefix}/{name}" if prefix else name


class MetricWriter:
  """Writes scalars (JSONL, progress line, TensorBoard), images and text of one run.

  Args:
    workdir: the run's directory (created if missing), a local path or a ``gs://`` URI.
    total_steps: the run's last step, for the progress line and its ETA.
    start_step: the step the run (re)starts from; the ETA counts from here.
  """

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self.start_step = start_step
    self.start_time = time.time()
    self.directory = storage.path(workdir)
    self.path = self.directory / METRICS_FILE
    self.remote = storage.is_remote(self.directory)
    self.events: Optional[EventsWriter] = None
    self.lines: list = []  # JSONL lines not yet written (remote workdirs)
    self.flushed_at = time.time()
    if self.active:
      (self.directory / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
      self.scratch = tempfile.mkdtemp(prefix="havic_jax_events_") if self.remote else None
      self._open_events()
      if start_step > 0:
        self._drop_lines_after(start_step)
        self.events.write_event(Event(wall_time=time.time(), step=start_step,
                                      session_log=SessionLog(status=SessionLog.START)))

  def _open_events(self) -> None:
    """A new event file: in the run's directory, or (remote) in the scratch directory,
    uploaded at the next flush."""
    directory = self.scratch if self.remote else self.directory / TENSORBOARD_DIR
    # Remote parts end in the time in ns: event files sort by name in the order written,
    # across resumed runs too.
    self.events = EventsWriter(os.path.join(os.fspath(directory), "events"),
                               f".{time.time_ns()}" if self.remote else "")

  def _drop_lines_after(self, step: int) -> None:
    """Rewrites ``metrics.jsonl`` without the lines of steps after ``step``."""
    if not self.path.exists():
      return
    lines = self.path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
    if len(kept) < len(lines):
      self.path.write_text("".join(kept))

  def _add_summary(self, step: int, summary: Any) -> None:
    """Appends one TensorBoard ``Summary`` proto at ``step`` to the event file."""
    self.events.write_event(Event(wall_time=time.time(), step=step, summary=summary))
    if time.time() - self.flushed_at > FLUSH_SECONDS:
      self.flush()

  def write(self, step: int, scalars: Mapping[str, float], prefix: Optional[str] = None
            ) -> None:
    """Appends ``{"step": step, **scalars}`` to ``metrics.jsonl`` (on return; remote
    workdirs: at the next flush), adds
    each scalar to TensorBoard and prints ``step s/N | k v ... | ETA h:mm:ss``."""
    if not self.active:
      return
    values = {_key(k, prefix): float(v) for k, v in scalars.items()}
    line = json.dumps({"step": step, **values}) + "\n"
    if self.remote:
      self.lines.append(line)
    else:
      storage.append_text(self.path, line)
    for tag, value in values.items():
      self._add_summary(step, tb_summary.scalar(tag, value))
    done = step - self.start_step
    elapsed = time.time() - self.start_time
    eta = elapsed / done * (self.total_steps - step) if done > 0 else 0.0
    shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
    print(f"step {step}/{self.total_steps} | {shown} | "
          f"ETA {datetime.timedelta(seconds=round(eta))}", flush=True)

  def write_images(self, step: int, images: Mapping[str, np.ndarray],
                   prefix: Optional[str] = None) -> None:
    """Each uint8 image ([H, W, 3] RGB or [H, W] grey) to TensorBoard and to
    ``images/step_{step:08d}/{key}.png``."""
    if not self.active:
      return
    for name, image in images.items():
      image = np.asarray(image)
      if image.dtype != np.uint8 or not (image.ndim == 2 or image.shape[2:] == (3,)):
        raise ValueError(f"image {name!r} must be uint8 [H, W, 3] or [H, W], got "
                         f"{image.dtype} {image.shape}")
      key = _key(name, prefix)
      self._add_summary(step, tb_summary.image(key, image,
                                               dataformats="HWC" if image.ndim == 3 else "HW"))
      path = self.directory / IMAGES_DIR / f"step_{step:08d}" / f"{key}.png"
      encoded, png = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image)  # BGR
      if not encoded:
        raise OSError(f"could not encode {path}")
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(png.tobytes())

  def write_text(self, name: str, text: str) -> None:
    """``text`` to ``{name}.txt`` and to TensorBoard's text tab (as a preformatted block, so
    tables keep their columns)."""
    if not self.active:
      return
    (self.directory / f"{name}.txt").write_text(text)
    self._add_summary(0, tb_summary.text(name, f"```\n{text}\n```"))

  def flush(self) -> None:
    """Puts every TensorBoard event and JSONL line written so far in the workdir (write calls
    do so themselves when the last flush is older than ``FLUSH_SECONDS``; locally the JSONL,
    PNG and TXT files are complete when their write call returns)."""
    if not self.active:
      return
    if self.remote:
      if self.lines:
        storage.append_text(self.path, "".join(self.lines))
        self.lines = []
      self._upload_events()
      self._open_events()
    else:
      self.events.flush()
    self.flushed_at = time.time()

  def _upload_events(self) -> None:
    """Closes the scratch event file and uploads it as one object (remote workdirs)."""
    self.events.close()
    local = self.events._file_name  # pylint: disable=protected-access
    with open(local, "rb") as file:
      (self.directory / TENSORBOARD_DIR / os.path.basename(local)).write_bytes(file.read())
    os.remove(local)

  def close(self) -> None:
    """Flushes and closes the TensorBoard event file."""
    if self.active:
      if self.remote:
        self.flush()
        self.events.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
      else:
        self.events.close()
      self.events = None


@functools.lru_cache(maxsize=None)
def train_metrics_class(names: Tuple[str, ...]) -> type[clu_metrics.Collection]:
  """The ``clu.metrics.Collection`` with one ``Average`` per name (cached, so the collections
  of every step of a run share one class and merge)."""
  return clu_metrics.Collection.create(
      **{name: clu_metrics.Average.from_output(name) for name in names})


def train_metrics_from(scalars: Mapping[str, jax.Array]) -> clu_metrics.Collection:
  """One step's scalars (each [] or [B]) -> a collection of averages; works under ``jit``.

  ``a.merge(b)`` accumulates steps and ``compute()`` returns ``{name: mean}`` over every merged
  value (with scalars, the mean over the merged steps). Learning-rate-like scalars are averaged
  too.
  """
  return train_metrics_class(tuple(sorted(scalars))).single_from_model_output(**scalars)


def window_means(steps: Sequence[Mapping[str, jax.Array]]) -> Dict[str, jax.Array]:
  """``{name: mean}`` of each scalar over ``steps``, the metrics of a logging window's steps
  (:func:`train_metrics_from` of each, merged); jittable, one call per window."""
  return functools.reduce(lambda window, step: window.merge(step),
                          map(train_metrics_from, steps)).compute()


def parameter_overview(params: Any, include_stats: bool = False) -> str:
  """A table of every parameter (name, shape, dtype, size, sharding) and the totals.

  ``params``: a (possibly boxed) pytree of nested dicts of arrays, possibly sharded. Without
  stats only metadata is read (no device transfer). ``include_stats=True`` adds each
  parameter's mean and std, computed by one jitted function on the sharded arrays (the
  scalars alone reach the host); then call it on every process, as it may use collectives.
  """
  return clu_parameter_overview.get_parameter_overview(
      nn.unbox(params), include_stats="global" if include_stats else "sharding")
