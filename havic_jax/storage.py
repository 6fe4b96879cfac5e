"""Where runs, exports and reports live: local paths and ``gs://`` URIs as one path type.

Every file the project writes or reads under a workdir or an output goes through
:func:`path`, an ``etils.epath.Path``: local directories behave as ``pathlib``'s, and
``gs://bucket/dir`` reaches Cloud Storage (gcsfs for files, tensorstore for Orbax's arrays).
``pathlib`` must not see a URI: ``pathlib.Path("gs://b/run").absolute()`` is the local folder
``<cwd>/gs:/b/run``. Training data and the videos the eval binary decodes stay on POSIX paths
(ArrayRecord and FFmpeg read files): :func:`local_only` refuses a URI there with the way out,
a bucket mounted with gcsfuse.

A file that readers must never see half-written is written through :func:`staged`: into a
staging file, published at its path only when complete.

gcsfs lists Cloud Storage directories afresh each time (its listings cache is off): other
clients write under a run too (tensorstore, the other hosts, a resumed run), and a cached
listing would hide their files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from typing import Iterator, Union

import fsspec
from etils import epath

PathLike = Union[str, os.PathLike]
STAGING_SUFFIX = ".partial"  # a local file is written as <name>.partial, then renamed

# Read when gcsfs's file system is first made (etils makes one per process, on first use).
fsspec.config.conf.setdefault("gcs", {})["use_listings_cache"] = False


def is_remote(location: PathLike) -> bool:
  """Whether ``location`` is a URI (``gs://...``) rather than a local path."""
  return "://" in os.fspath(location)


def path(location: PathLike) -> epath.Path:
  """``location`` as an ``epath.Path``: a URI as it is, a local path made absolute.

  Raises ValueError for a local path with a ``gs:`` component (a URI that lost a slash, e.g.
  ``gs:/bucket/run``), which would otherwise become a local folder named ``gs:``."""
  location = epath.Path(location)
  if is_remote(location):
    return location
  if "gs:" in location.parts:
    raise ValueError(f"{location}: a local path with a 'gs:' folder; write Cloud Storage "
                     f"locations as gs://BUCKET/PATH")
  return location.absolute()


def local_only(location: PathLike, what: str) -> str:
  """``location`` (returned unchanged) if it is a local path; ValueError naming ``what``
  otherwise, since the readers of training data and videos need POSIX files."""
  if is_remote(location):
    raise ValueError(f"{what} must be a local path, got {location}: the readers need files; "
                     f"mount the bucket with gcsfuse (gcsfuse --implicit-dirs BUCKET /mnt/BUCKET)"
                     f" and pass the mounted path")
  return os.fspath(location)


def append_text(file: epath.Path, text: str) -> None:
  """Appends ``text`` to ``file`` (created if missing). Objects cannot be appended to: on
  Cloud Storage ``text`` is uploaded as an object of its own and composed onto ``file`` (one
  server-side copy, so an append costs O(len(text)) however long the file is); on other
  object stores the object is read and written again whole."""
  if not is_remote(file):
    with file.open("a") as handle:
      handle.write(text)
  elif not file.exists():
    file.write_text(text)
  elif os.fspath(file).startswith("gs://"):
    gcs = fsspec.filesystem("gs")
    part = f"{os.fspath(file)}.append-{uuid.uuid4().hex}"
    gcs.pipe(part, text.encode())
    try:
      gcs.merge(os.fspath(file), [os.fspath(file), part])
    finally:
      gcs.rm(part)
  else:
    file.write_text(file.read_text() + text)


@contextlib.contextmanager
def local_copy(location: PathLike) -> Iterator[str]:
  """A local path holding ``location``'s bytes: ``location`` itself when it is local, else a
  temporary copy of the object, deleted on exit (for readers that need files, e.g. PyAV)."""
  if not is_remote(location):
    yield os.fspath(location)
    return
  with tempfile.TemporaryDirectory() as scratch:
    local = os.path.join(scratch, path(location).name)
    with path(location).open("rb") as source, open(local, "wb") as target:
      shutil.copyfileobj(source, target)
    yield local


@contextlib.contextmanager
def staged(location: PathLike) -> Iterator[epath.Path]:
  """Yields a local path to write ``location``'s content to; publishes it at ``location`` when
  the block ends without an exception, so that readers never see a partial file.

  A local ``location`` is staged as ``<name>.partial`` in its folder and renamed into place
  (atomic); a URI (``gs://...``) is staged in a temporary folder (for writers that need files)
  and uploaded when complete (Cloud Storage makes an object visible only once its upload is
  finished). On an exception the staging is removed and nothing is published: what was at
  ``location`` before stays."""
  final = path(location)
  if not is_remote(final):
    staging = final.with_name(final.name + STAGING_SUFFIX)
    try:
      yield staging
      staging.replace(final)
    finally:
      staging.unlink(missing_ok=True)
    return
  with tempfile.TemporaryDirectory() as scratch:
    staging = epath.Path(scratch) / final.name
    yield staging
    with staging.open("rb") as source, final.open("wb") as target:
      shutil.copyfileobj(source, target)
