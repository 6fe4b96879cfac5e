"""absl entry-point helper shared by the project's commands.

Every command logs its own lines (INFO and up) and everyone's warnings; the INFO lines of the
libraries underneath (Orbax, JAX, absl, Grain, ...) show only with ``--verbosity=1`` (absl's
flag) or more.
"""

import logging
import os
import pathlib
import sys
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

HELP_FLAGS = ("--help", "-h", "-?", "--helpfull", "--helpshort")
# Source folders whose INFO lines always show: this package and the data_pipelines commands.
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
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


def run(main: Callable[[Sequence[str]], None]) -> None:
  """``absl.app.run(main)`` with :func:`quiet_libraries`, except that asking for help exits
  with status 0 (absl uses 1)."""
  app.call_after_init(quiet_libraries)
  try:
    app.run(main)
  except SystemExit as exit_:
    if exit_.code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):
      sys.exit(0)
    raise
