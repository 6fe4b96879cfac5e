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

The work directory may be a ``gs://`` URI (:mod:`havic_jax.storage`): the JSONL, PNG and
TXT files go through ``etils.epath``, the event file through tensorboardX's own Cloud Storage
writer (google-cloud-storage), which uploads the whole file again at each flush.

Events are built with ``tensorboardX.summary`` and written synchronously by its
``EventsWriter``: ``SummaryWriter`` hands them to a writer thread whose queue its ``flush()``
does not drain, so :meth:`MetricWriter.flush` could not promise they are on disk.

Aggregation: :func:`train_metrics_from` turns one step's scalars into a ``clu.metrics``
collection of averages (inside the jitted step); merging the collections of a logging window
and calling ``compute()`` gives each scalar's mean over the window.
"""

from __future__ import annotations

import datetime
import functools
import json
import time
from typing import Any, Mapping, Optional, Tuple

import cv2
import flax.linen as nn
import jax
import numpy as np
from clu import metrics as clu_metrics
from clu import parameter_overview as clu_parameter_overview
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event

from havic_jax import storage

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
    self.path = self.directory / "metrics.jsonl"
    self.events: Optional[EventsWriter] = None
    self.flushed_at = time.time()
    if self.active:
      (self.directory / TENSORBOARD_DIR).mkdir(parents=True, exist_ok=True)
      self.events = EventsWriter(str(self.directory / TENSORBOARD_DIR / "events"))

  def _add_summary(self, step: int, summary: Any) -> None:
    """Appends one TensorBoard ``Summary`` proto at ``step`` to the event file."""
    self.events.write_event(Event(wall_time=time.time(), step=step, summary=summary))
    if time.time() - self.flushed_at > FLUSH_SECONDS:
      self.flush()

  def write(self, step: int, scalars: Mapping[str, float], prefix: Optional[str] = None
            ) -> None:
    """Appends ``{"step": step, **scalars}`` to ``metrics.jsonl`` (flushed on return), adds
    each scalar to TensorBoard and prints ``step s/N | k v ... | ETA h:mm:ss``."""
    if not self.active:
      return
    values = {_key(k, prefix): float(v) for k, v in scalars.items()}
    storage.append_text(self.path, json.dumps({"step": step, **values}) + "\n")
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
    """Puts every TensorBoard event written so far on disk (write calls do so themselves when
    the last flush is older than ``FLUSH_SECONDS``; the JSONL, PNG and TXT files are complete
    when their write call returns)."""
    if self.active:
      self.events.flush()
      self.flushed_at = time.time()

  def close(self) -> None:
    """Flushes and closes the TensorBoard event file."""
    if self.active:
      self.events.close()
      # Dropped now: tensorboardX's Cloud Storage writer uploads once more when collected,
      # which at interpreter exit fails.
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


def parameter_overview(params: Any, include_stats: bool = False) -> str:
  """A table of every parameter (name, shape, dtype, size, sharding) and the totals.

  ``params``: a (possibly boxed) pytree of nested dicts of arrays, possibly sharded. Without
  stats only metadata is read (no device transfer). ``include_stats=True`` adds each
  parameter's mean and std, computed by one jitted function on the sharded arrays (the
  scalars alone reach the host); then call it on every process, as it may use collectives.
  """
  return clu_parameter_overview.get_parameter_overview(
      nn.unbox(params), include_stats="global" if include_stats else "sharding")
