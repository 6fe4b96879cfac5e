"""absl entry-point helper shared by the project's commands."""

import sys
from typing import Callable, Sequence

from absl import app

HELP_FLAGS = ("--help", "-h", "-?", "--helpfull", "--helpshort")


def run(main: Callable[[Sequence[str]], None]) -> None:
  """``absl.app.run(main)``, except that asking for help exits with status 0 (absl uses 1)."""
  try:
    app.run(main)
  except SystemExit as exit_:
    if exit_.code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):
      sys.exit(0)
    raise
