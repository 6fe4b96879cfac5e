"""absl entry-point helpers shared by the project's commands: logging, help, one-line errors
for mistakes in what was asked for (``errors.UserError``, unknown config fields, paths checked
before any work), and JAX's persistent compilation cache (``--compilation_cache``) for the
commands that compile.

Every command logs its own lines (INFO and up) and everyone's warnings; the INFO lines of the
libraries underneath (Orbax, JAX, absl, Grain, ...) show only with ``--verbosity=1`` (absl's
flag) or more.
"""

import difflib
import importlib.util
import logging
import os
import pathlib
import sys
from typing import Any, Callable, List, Mapping, Optional, Sequence

from absl import app, flags
from absl import logging as absl_logging

from havic_jax.errors import UserError

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


def define_distributed_flags() -> None:
  """Flags of a process joined to others by ``jax.distributed`` (:func:`initialize_distributed`)
  and of simulated CPU devices."""
  flags.DEFINE_bool("multihost", False,
                    "Call jax.distributed.initialize() (TPU pods, SLURM GPU clusters).")
  flags.DEFINE_string("coordinator_address", None,
                      "HOST:PORT of process 0 for jax.distributed (implies --multihost).")
  flags.DEFINE_integer("num_processes", None, "Processes in the run (with "
                       "--coordinator_address).")
  flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
  flags.DEFINE_integer("cpu_devices", None,
                       "Simulate this many CPU devices per process (testing meshes without "
                       "accelerators).")
  flags.DEFINE_bool("allow_cpu", False,
                    "Let a multi-host run (--multihost, --coordinator_address) run on CPUs; "
                    "without it such a run stops, as a pod or cluster whose accelerator "
                    "runtime is missing would otherwise train on the hosts' CPUs.")


def initialize_distributed() -> None:
  """Applies :func:`define_distributed_flags`' flags: the simulated CPU devices, then
  ``jax.distributed.initialize`` with the explicit coordinator, or with what the cluster's
  environment says (``--multihost``: Cloud TPU, SLURM)."""
  import jax
  if flags.FLAGS.cpu_devices:
    jax.config.update("jax_num_cpu_devices", flags.FLAGS.cpu_devices)
  if flags.FLAGS.coordinator_address:
    jax.distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
  elif flags.FLAGS.multihost:
    jax.distributed.initialize()
  platform = jax.devices()[0].platform
  if jax.process_index() == 0:
    print(f"devices: {jax.device_count()} {platform} ({jax.local_device_count()} per process), "
          f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}",
          flush=True)
  multihost = flags.FLAGS.coordinator_address or flags.FLAGS.multihost
  if multihost and platform == "cpu" and not flags.FLAGS.allow_cpu:
    raise UserError(
        f"--multihost: JAX found only CPUs ({jax.device_count()} over {jax.process_count()} "
        f"processes); install the accelerator's JAX (pip install -e \".[tpu]\" on TPU VMs, "
        f"\".[cuda]\" on GPU nodes), or pass --allow_cpu to run on CPUs")


def define_compilation_cache_flag() -> None:
  """``--compilation_cache`` of the commands that compile (read by
  :func:`enable_compilation_cache`)."""
  flags.DEFINE_string(
      "compilation_cache", None,
      "Directory of JAX's persistent compilation cache: later runs of the same program load "
      "it instead of compiling (default: $JAX_COMPILATION_CACHE_DIR, else "
      f"{DEFAULT_COMPILATION_CACHE} on GPUs and TPUs, none on CPUs); 'off' turns it off.")


def enable_compilation_cache() -> Optional[str]:
  """Points JAX's persistent compilation cache at ``--compilation_cache`` (or its default) and
  returns the directory; None where it is off. Call before the first compile and after
  ``jax.distributed.initialize``. On CPUs the cache is used only where a directory is named
  (the flag or ``JAX_COMPILATION_CACHE_DIR``): processes loading cached XLA:CPU executables
  have aborted (SIGABRT) on resuming runs. Processes joined by ``jax.distributed`` on CPUs run
  without it whatever is named (there every resumed run aborted)."""
  import jax
  named = flags.FLAGS.compilation_cache or os.environ.get("JAX_COMPILATION_CACHE_DIR")
  cpu = jax.default_backend() == "cpu"
  directory = named or ("off" if cpu else DEFAULT_COMPILATION_CACHE)
  if directory != "off" and cpu and jax.process_count() > 1:
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
  try:  # JAX's own probe of the host's devices (private: other JAX versions may lack it)
    from jax._src import hardware_utils
    accelerators = (hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
                    or hardware_utils.has_visible_nvidia_gpu())
  except (ImportError, AttributeError):
    return
  if not accelerators:
    jax.config.update("jax_platforms", "cpu")


def config_fields(config: Any, prefix: str = "") -> List[str]:
  """Dotted names of every field of a ConfigDict, nested ones included."""
  names = []
  for key in config.keys():
    names.append(prefix + key)
    if hasattr(config[key], "keys"):
      names += config_fields(config[key], f"{prefix}{key}.")
  return names


def load_config_file(spelling: str) -> Any:
  """The config ``FILE[:ARGS]`` names, as ``--config=FILE[:ARGS]`` of a binary loads it:
  FILE's ``get_config(ARGS)`` (``get_config()`` without ARGS). Raises ``ValueError`` where
  FILE is not a readable Python file; the config's own errors propagate."""
  file, _, arguments = spelling.partition(":")
  if not os.path.isfile(file):
    raise ValueError(f"{file}: no config file there")
  spec = importlib.util.spec_from_file_location(pathlib.Path(file).stem, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arguments) if arguments else module.get_config()


def unknown_config_field(argv: Sequence[str]) -> Optional[str]:
  """The first ``--NAME.FIELD=VALUE`` override in ``argv`` whose FIELD the config file of
  ``--NAME=FILE`` lacks, with the nearest fields it has; None where every override names a
  field."""
  files = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
  for arg in argv:
    name, _, field = arg[2:].partition("=")[0].partition(".")
    if not (arg.startswith("--") and field and name in files):
      continue
    try:
      config = load_config_file(files[name])
    except Exception:  # the file itself is the problem: absl reports it
      return None
    fields = config_fields(config)
    if field not in fields:
      near = difflib.get_close_matches(field, fields, n=3, cutoff=0.6)
      hint = f"; did you mean {', '.join(f'--{name}.{n}' for n in near)}?" if near else (
          f"; its fields: {', '.join(sorted(config.keys()))}")
      return f"--{name}.{field}: {files[name]} has no field {field!r}{hint}"
  return None


def check_paths(inputs: Mapping[str, Optional[str]] = {},
                output_dirs: Mapping[str, Optional[str]] = {},
                output_files: Mapping[str, Optional[str]] = {}) -> None:
  """Checks, before any work and without changing anything, the local paths a command
  depends on (``{flag: path}``; empty and ``gs://`` values are skipped): ``inputs`` exist,
  ``output_dirs`` and the directories of ``output_files`` can be created or written. Raises one
  :class:`UserError` with one line per problem."""
  problems = []
  local = lambda mapping: [(flag, path) for flag, path in mapping.items()
                           if path and not str(path).startswith("gs://")]
  for flag, path in local(inputs):
    if not os.path.exists(path):
      problems.append(f"{flag}={path}: no such file or directory")
  writable = local(output_dirs) + [(flag, os.path.dirname(os.path.abspath(path)))
                                   for flag, path in local(output_files)]
  for flag, directory in writable:
    existing = os.path.abspath(directory)  # the deepest part that exists: created under it
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      problems.append(f"{flag}: cannot write to {directory} ({existing} is a file)")
    elif not os.access(existing, os.W_OK):
      problems.append(f"{flag}: cannot write to {directory} ({existing} is not writable)")
  if problems:
    raise UserError("\n".join(problems))


def fail(message: str, code: int) -> None:
  """Prints ``message`` as ``error: ...`` lines on stderr and exits with ``code``."""
  for line in str(message).splitlines() or [""]:
    print(f"error: {line}", file=sys.stderr)
  sys.exit(code)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """``absl.app.run(main)`` with :func:`quiet_libraries` and
  :func:`cpu_only_without_accelerators`, except that asking for help exits with status 0 (absl
  uses 1), an override of a config field that does not exist is one line naming the nearest
  fields (exit 2), and a :class:`UserError` is its message (exit 1): their tracebacks print
  only with ``--verbose`` or ``HAVIC_JAX_TRACEBACK=1``."""
  flags.DEFINE_bool("verbose", False, "Print the Python traceback of errors in what was asked "
                    "for (missing files, unknown config fields, data of another layout); also "
                    "HAVIC_JAX_TRACEBACK=1.")
  # The flags defined here belong to the binary: its --help lists them (absl lists the main
  # module's key flags, keyed by sys.argv[0]).
  for flag in flags.FLAGS.get_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.call_after_init(quiet_libraries)
  app.call_after_init(cpu_only_without_accelerators)
  started = []
  try:
    app.run(lambda argv: started.append(True) or main(argv))
  except SystemExit as exit_:
    if exit_.code == 1 and any(arg in HELP_FLAGS for arg in sys.argv[1:]):
      sys.exit(0)
    raise
  except Exception as error:
    traceback = ("--verbose" in sys.argv or os.environ.get("HAVIC_JAX_TRACEBACK") == "1"
                 or (flags.FLAGS.is_parsed() and flags.FLAGS.verbose))
    problem = None if started else unknown_config_field(sys.argv)
    if problem and not traceback:
      fail(problem, 2)
    if isinstance(error, UserError) and not traceback:
      fail(str(error), 1)
    raise
