"""The base class of errors in what a user asked for.

A :class:`UserError` is a mistake a command's user can fix: a missing or unwritable path, a
config field that does not exist, data or a checkpoint not of the expected kind. Commands
(``cli.run``) print its message as ``error: ...`` lines and exit 1, with the Python traceback
only under ``--verbose`` or ``HAVIC_JAX_TRACEBACK=1``; any other exception is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """A mistake in what was asked for; the message names it and the fix."""
