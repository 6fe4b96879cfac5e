"""absl entry-point helpers shared by the project's commands: logging, help, and JAX's
persistent compilation cache (``--compilation_cache``) for the commands that compile.

Every command logs its own lines (INFO and up) and everyone's warnings; the INFO lines of the
libraries underneath (Orbax, JAX, absl, Grain, ...) show only with ``--verbosity=1`` (absl's
flag) or more.
"""

import logging
import os
import pathlib
import sys
from typing import Callable, Optional, Sequence

from absl import app, flags
from absl import logging as absl_logging

HELP_FLAGS = ("--help", "-h", "-?", "--helpfull", "--helpshort")
# Source folders whose INFO lines always show: this package and the data_pipelines commands.
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
DEFAULT_COMPILATION_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "havic_jax", "xla")
OWN_SOURCES = tuple(f"{path}{os.sep}" for path in (PACKAGE_DIR,
                                                   PACKAGE_DIR.parent / "data_pipelines"))


class OwnInfoOnly(logging.Filter):
  """Keeps warnings and errors, and lower records logged from ``OWN_SOURCES`` only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(OWN_SOURCES)


def quiet_libraries() -> None:
  """Below ``--verbosity=1``, other libraries' INFO records leave absl's log handler out."""
  if flags.FLAGS.verbosity < 1:
    absl_logging.get_absl_handler().addFilter(OwnInfoOnly())


def define_compilation_cache_flag() -> None:
  """``--compilation_cache`` of the commands that compile (read by
  :func:`enable_compilation_cache`)."""
  flags.DEFINE_string(
      "compilation_cache", None,
      "Directory of JAX's persistent compilation cache: later runs of the same program load "
      "it instead of compiling (default: $JAX_COMPILATION_CACHE_DIR, else "
      f"{DEFAULT_COMPILATION_CACHE}); 'off' turns it off.")


def enable_compilation_cache() -> Optional[str]:
  """Points JAX's persistent compilation cache at ``--compilation_cache`` (or its default) and
  returns the directory; None where it is off. Call before the first compile and after
  ``jax.distributed.initialize``: processes joined by ``jax.distributed`` on CPUs run without
  it (there the cache aborted the runs that read it)."""
  import jax
  directory = (flags.FLAGS.compilation_cache or os.environ.get("JAX_COMPILATION_CACHE_DIR")
               or DEFAULT_COMPILATION_CACHE)
  if directory != "off" and jax.process_count() > 1 and jax.default_backend() == "cpu":
    absl_logging.info("compilation cache off: %d processes on CPUs", jax.process_count())
    directory = "off"
  if directory == "off":
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  return directory


def cpu_only_without_accelerators() -> None:
  """On a host with neither TPU chips nor NVIDIA GPUs, where ``JAX_PLATFORMS`` is not set,
  tells JAX the CPU is its platform before it looks for backends. Otherwise, with libtpu
  installed (the ``tpu`` extra, which compiles TPU programs on any host), JAX would start
  libtpu's runtime to find no chip, and libtpu prints start-up errors ("Failed to find host
  bounds for accelerator type", "unexpected worker hostname ... TPU_WORKER_HOSTNAMES"). TPU
  topologies still compile (``havic_jax.aot`` loads libtpu's compiler by itself)."""
  if os.environ.get("JAX_PLATFORMS"):
    return
  import jax
  from jax._src import hardware_utils
  if (hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0
      and not hardware_utils.has_visible_nvidia_gpu()):
    jax.config.update("jax_platforms", "cpu")


def run(main: Callable[[Sequence[str]], None]) -> None:
  """``absl.app.run(main)`` with :func:`quiet_libraries` and
  :func:`cpu_only_without_accelerators`, except that asking for help exits with status 0 (absl
  uses 1)."""
  app.call_after_init(quiet_libraries)
  app.call_after_init(cpu_only_without_accelerators)
  try:
    app.run(main)
  except SystemExit as exit_:
    if exit_.code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):
      sys.exit(0)
    raise
