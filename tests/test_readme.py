"""README.md and every docs/*.md against the code, harvested from their text by the same
rules for each file: every ``python -m MODULE ...`` usage line (fenced ``bash`` blocks, inline
code, the commands table, and the detectors table's ``main --...``, which is
``python -m havic_jax.main``), every fenced ``python`` block and every inline call into
``havic_jax``.

A usage line's module answers ``--help`` listing each of the line's flags, its config loads
with its ``--config.x=y`` overrides, and the repository files it names exist. A line either
runs here, on the tiny model and the synthetic corpus, with its placeholders filled as
:data:`RUNS` says for its module, or matches a rule of :data:`SKIPS` that gives the reason it
cannot; a line that does neither fails. The Python snippets run on what those lines wrote.
"""

import concurrent.futures
import dataclasses
import importlib
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from conftest import shared_directory
from havic_jax.checkpoints import released
from havic_jax.models import reference
from havic_jax.models.config import ModelConfig
from test_convert import TINY, accounted_for, source_state_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = tuple(sorted((ROOT / "docs").glob("*.md")))
FILES = (README, *DOCS)  # the harvested files, README first
README_WORKDIR = "/tmp/havic_demo"  # the Quick start's workdir; its export is README_WORKDIR/export
TINY_CONFIG = "configs/pretrain_tiny.py"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
# An inline code span: backticks around text that does not cross a blank line.
SPAN = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")
CALL = re.compile(r"^havic_jax(?:\.\w+)+\(.*\)$")
# Alternative string arguments of a call, e.g. "pretrain" | "finetune".
STRING_CHOICE = re.compile(r'"[^"]*"(?:\s*\|\s*"[^"]*")+')
# A flag definition of --help: absl's "  --name: ..." / "  --[no]name: ...", argparse's
# "  -q, --quiet ..." (description lines are indented further).
HELP_FLAG = re.compile(r"^  (?:-\w, )?--(\[no\])?([\w-]+)", re.M)
# A value that stands for something the reader supplies: an upper-case word (DIR, CONFIG,
# FILE.json), an elision, a choice (a|b, {a,b}) or a path of the writer's machine.
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*\b|/)|\.\.\.|\||\{")
# Top-level entries of the repository that a usage line can name as files.
REPOSITORY_DIRS = ("configs", "data_pipelines", "havic_jax", "launch", "tests")


@dataclasses.dataclass(frozen=True)
class Flag:
  """``--name[=value]``."""
  name: str
  value: Optional[str]

  def __str__(self) -> str:
    return f"--{self.name}" if self.value is None else f"--{self.name}={self.value}"


@dataclasses.dataclass(frozen=True)
class Arg:
  """A word of a usage line after the module, brackets removed: a flag, a choice of flags
  (``--per_chip_batch=B|--batch=GLOBAL``) or a positional word; ``optional`` inside ``[...]``."""
  text: str
  optional: bool

  @property
  def flags(self) -> List[Flag]:
    if not self.text.startswith("--"):
      return []
    return [Flag(*part[2:].split("=", 1)) if "=" in part else Flag(part[2:], None)
            for part in re.split(r"\|(?=--)", self.text)]


@dataclasses.dataclass(frozen=True)
class Usage:
  """``python -m MODULE ARGS`` at line ``line`` of ``file`` (relative to the repository)."""
  line: int
  module: str
  args: Tuple[Arg, ...]
  file: str = "README.md"

  @property
  def where(self) -> str:
    return f"{self.file} line {self.line}"

  @property
  def text(self) -> str:
    words = [f"[{arg.text}]" if arg.optional else arg.text for arg in self.args]
    return " ".join(["python -m", self.module, *words])

  @property
  def required(self) -> str:
    """The line without its optional parts (what :data:`SKIPS` patterns match)."""
    return " ".join(["python -m", self.module, *(a.text for a in self.args if not a.optional)])

  @property
  def flags(self) -> List[Flag]:
    return [flag for arg in self.args for flag in arg.flags]

  def value(self, name: str) -> Optional[str]:
    """The value of the first ``--name=...``, or None."""
    return next((flag.value for flag in self.flags if flag.name == name), None)


@dataclasses.dataclass(frozen=True)
class Harvest:
  """What the text of the harvested files holds: usage lines, fenced ``python`` blocks and
  inline ``havic_jax`` calls, each as (file, line, code)."""
  usages: Tuple[Usage, ...]
  python_blocks: Tuple[Tuple[str, int, str], ...]
  calls: Tuple[Tuple[str, int, str], ...]


def parse_args(words: List[str]) -> Tuple[Arg, ...]:
  """Args of the words after the module; ``[`` and ``]`` may open and close on different
  words (``[--runner=local|beam --beam_options="..."]``)."""
  args, depth = [], 0
  for word in words:
    opening = len(word) - len(word.lstrip("["))
    depth += opening
    text = word[opening:]
    closing = min(depth, len(text) - len(text.rstrip("]")))
    args.append(Arg(text[:len(text) - closing], depth > 0))
    depth -= closing
  return tuple(args)


def shell_commands(body: str, first_line: int) -> Iterator[Tuple[int, List[str]]]:
  """(line, words) of each command of a ``bash`` block: continued lines joined as bash
  joins them, comments and here-document bodies left out, ``&&``, ``;`` and ``|`` between
  commands."""
  lines = body.split("\n")
  i = 0
  while i < len(lines):
    start, logical = i, lines[i]
    while logical.endswith("\\") and i + 1 < len(lines):
      i += 1
      logical = logical[:-1] + lines[i]
    i += 1
    heredoc = re.search(r"<<-?\s*'?(\w+)'?", logical)
    if heredoc:
      while i < len(lines) and lines[i].strip() != heredoc.group(1):
        i += 1
      i += 1
    words: List[str] = []
    for word in shlex.split(logical, comments=True) + [";"]:
      if word in ("&&", ";", "|"):
        if words:
          yield first_line + start, words
        words = []
      else:
        words.append(word)


def python_m(line: int, words: List[str]) -> Optional[Usage]:
  """The usage line of ``words`` if they are ``python -m MODULE ...``, else None."""
  if words[:2] == ["python", "-m"] and len(words) > 2:
    return Usage(line, words[2], parse_args(words[3:]))
  return None


def harvest(text: str, name: str = "README.md", modules: Tuple[str, ...] = ()) -> Harvest:
  """The usage lines, Python blocks and calls of the text of file ``name``; ``modules``: more
  modules (those the other files name) the detectors table's short names may stand for."""
  usages, python_blocks = [], []
  for fence in FENCE.finditer(text):
    first_line = text.count("\n", 0, fence.start(2)) + 1
    if fence.group(1) == "python":
      python_blocks.append((name, first_line, fence.group(2)))
    elif fence.group(1) == "bash":
      usages += filter(None, (python_m(line, words)
                              for line, words in shell_commands(fence.group(2), first_line)))
  prose = FENCE.sub(lambda fence: "\n" * fence.group(0).count("\n"), text)
  spans = [(prose.count("\n", 0, span.start()) + 1,
            " ".join(span.group(1).split()).replace("\\|", "|"))  # a table cell's escape
           for span in SPAN.finditer(prose)]
  usages += filter(None, (python_m(line, shlex.split(span)) for line, span in spans
                          if span.startswith("python -m ")))
  # The detectors table names havic_jax's binaries by their last name ("main --config=...").
  short = {module.rsplit(".", 1)[1]: module
           for module in [*modules, *(usage.module for usage in usages)]
           if module.startswith("havic_jax.")}
  for line, span in spans:
    word, _, rest = span.partition(" ")
    if word in short and rest.startswith("--"):
      usages.append(Usage(line, short[word], parse_args(shlex.split(rest))))
  usages = [dataclasses.replace(usage, file=name) for usage in usages]
  calls = tuple((name, line, span) for line, span in spans if CALL.match(span))
  return Harvest(tuple(sorted(usages, key=lambda usage: usage.line)), tuple(python_blocks),
                 calls)


def harvest_files(paths: Tuple[pathlib.Path, ...]) -> Harvest:
  """The harvests of the files ``paths``, in their order; a short name in one file's
  detectors table may stand for a module that any of the files names."""
  texts = {path.relative_to(ROOT).as_posix(): path.read_text() for path in paths}
  modules = tuple(sorted({usage.module for name, text in texts.items()
                          for usage in harvest(text, name).usages}))
  parts = [harvest(text, name, modules) for name, text in texts.items()]
  return Harvest(*(tuple(item for part in parts for item in getattr(part, field))
                   for field in ("usages", "python_blocks", "calls")))


def unknown_flags(usage: Usage, help_text: str) -> List[str]:
  """The flags of ``usage`` that ``help_text`` (its module's ``--help``) does not list;
  ``--config.x`` fields are left to :func:`config_error`."""
  listed = {name for _, name in HELP_FLAG.findall(help_text)}
  booleans = {name for no, name in HELP_FLAG.findall(help_text) if no}
  return [str(flag) for flag in usage.flags
          if not flag.name.startswith("config.") and flag.name not in listed
          and not (flag.name.startswith("no") and flag.name[2:] in booleans)]


def config_error(usage: Usage) -> Optional[str]:
  """Why ``usage``'s ``--config`` (a file, ``:`` its arguments) does not load with its
  ``--config.x=y`` overrides, as the binaries parse them (``ml_collections.config_flags``)."""
  path, colon, arguments = usage.value("config").partition(":")
  overrides = [str(flag) for flag in usage.flags if flag.name.startswith("config.")]
  argv = ["readme", f"--config={ROOT / path}{colon}{arguments}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  try:
    values(argv)
    values.config.to_dict()
  except Exception as error:  # any failure to load or override is the finding
    return f"{' '.join(argv[1:])}: {type(error).__name__}: {error}"
  return None


def missing_files(usage: Usage) -> List[str]:
  """Repository files ``usage`` names (flag values and positional words under
  :data:`REPOSITORY_DIRS`, a config's ``:`` arguments dropped) that do not exist."""
  values = [flag.value for flag in usage.flags if flag.value]
  values += [arg.text for arg in usage.args if not arg.text.startswith("-")]
  paths = [value.partition(":")[0] for value in values
           if value.split("/")[0] in REPOSITORY_DIRS and "{" not in value]
  return [path for path in paths if not (ROOT / path).exists()]


@dataclasses.dataclass(frozen=True)
class Run:
  """How the usage lines of one module run here. ``fill``: each placeholder value's value
  (``{name}`` formats a path of :data:`PATHS`); ``keep``: the optional flags that run, filled
  the same way (other optional parts are left out); ``outputs``: files the harvested text says
  the command writes; ``after``: the module whose lines run first."""
  fill: Dict[str, str]
  keep: Tuple[str, ...] = ()
  outputs: Tuple[str, ...] = ()
  after: Optional[str] = None


# Directories of the runs, under one directory of the test run.
PATHS = {"demo": "havic_demo", "export": "havic_demo/export", "synthetic": "synthetic",
         "prepared": "prepared", "report": "report"}
# Modules whose usage lines run; a module with ``after`` runs after that one, the others side
# by side with it.
RUNS = {
    "havic_jax.main": Run(
        {README_WORKDIR: "{demo}", "CONFIG": TINY_CONFIG, "DIR": "{demo}"},
        outputs=("{demo}/metrics.jsonl", "{demo}/tensorboard", "{demo}/checkpoints")),
    "havic_jax.export": Run(
        {"PRETRAIN_WORKDIR": "{demo}", "DIR": "{export}"},
        outputs=("{export}/config.json", "{export}/params.safetensors", "{export}/params"),
        after="havic_jax.main"),
    "havic_jax.eval": Run(
        {"WORKDIR_OR_EXPORT_OR_RELEASED_FILE": "{export}", "NAME": "all", "DIR": "{report}",
         "CSV_OR_DIR": "{demo}/synthetic_data/prepared"},  # the Quick start's prepared shards
        keep=("scorer",),  # a pretraining export scores with --scorer=coherence
        outputs=tuple(f"{{report}}/{name}" for name in (
            "results.json", "results.md", "roc.png", "pr.png", "per_video.csv",
            "per_window.csv")),
        after="havic_jax.export"),
    "havic_jax.bench": Run(
        {"CONFIG": TINY_CONFIG, "...": TINY_CONFIG, "B": "8", "N": "0"},
        keep=("batch", "steps"),  # --steps=0: compile only
        after="havic_jax.main"),  # whose step it loads from the compilation cache
    "havic_jax.models.summary": Run({"CONFIG": TINY_CONFIG}),
    "data_pipelines.synthetic": Run(
        {"DIR": "{synthetic}", "N": "4"}, outputs=("{synthetic}/FakeAVCeleb/meta_data.csv",)),
    "data_pipelines.prepare": Run(
        {"{lrs2,voxceleb2,fakeavceleb,csv,folder}": "fakeavceleb", "DIR_OR_CSV": "{synthetic}",
         "DIR_OR_GS": "{prepared}"},
        outputs=("{prepared}/manifest.json",), after="data_pipelines.synthetic"),
}
# Usage lines that do not run here: (pattern searched in Usage.required, reason); the first
# rule that matches applies.
SKIPS = (
    (r"^python -m pytest ", "runs the test suite, this file included (.ci/run runs the two "
                            "marked commands)"),
    (r"gs://", "needs a Cloud Storage bucket (tests/test_storage.py and tests/test_resume.py "
               "run these paths on an emulator)"),
    (r"\.pth\b", "needs the authors' released PyTorch weights"),
    (r"=/(data|shared)/", "reads a downloaded dataset"),
    (r"--protocol=kodf\b", "scores KoDF, a downloaded benchmark (tests/test_eval_windows.py "
                           "runs the one-machine and the distributed paths on synthetic videos)"),
    (r" \.\.\.( |$)", "an excerpt: its other arguments are elided"),
    (r"^python -m havic_jax\.aot ", "compiles for a TPU topology: about 40 s for the tiny model "
                                    "on 2 cores (tests/test_aot.py compiles it)"),
    (r"^python -m havic_jax\.batch_scaling ", "a study of many pretraining runs (batches × "
                                              "learning-rate scalings × seeds)"),
    (r"^python -m havic_jax\.compare ", "trains every detector: minutes (tests/test_compare.py "
                                        "runs it on one detector)"),
    (r"^python -m havic_jax\.convert ", "needs a weights file (FILE); tests/test_convert.py "
                                        "runs it on a tiny state_dict"),
    (r"configs/(consistency|fine_grained|fakeout)\.py", "trains another detector: about 40 s "
                                                        "each on 2 cores (tests/test_detectors.py, "
                                                        "long_run)"),
    (r"^python -m data_pipelines\.bench", "a throughput benchmark of preparation and loading"),
    (r"^python -m data_pipelines\.tfds_builders ", "builds from a VoxCeleb2 download "
                                                   "(--manual_dir)"),
    (r"^python -m [\w.]+( --\w+)?$", "names the binary, or one of its flags, in prose"),
)

HARVEST = harvest_files(FILES)


def usage_ids(usages: Tuple[Usage, ...]) -> Dict[str, Usage]:
  """{"<file>:L<line> <module>", with "#2", "#3", ... where a line names a module again:
  usage}."""
  ids: Dict[str, Usage] = {}
  for usage in usages:
    base = key = f"{usage.file}:L{usage.line} {usage.module}"
    repeat = 1
    while key in ids:
      repeat += 1
      key = f"{base}#{repeat}"
    ids[key] = usage
  return ids


USAGES = usage_ids(HARVEST.usages)
IDS = list(USAGES)


def skip_reason(usage: Usage) -> Optional[str]:
  """The reason of the first rule of :data:`SKIPS` that matches ``usage``, or None."""
  return next((reason for pattern, reason in SKIPS if re.search(pattern, usage.required)),
              None)


def fill(run: Run, value: str, paths: Dict[str, pathlib.Path]) -> Tuple[str, List[str]]:
  """``value`` with ``run.fill`` applied, and the placeholder left unfilled, if any."""
  if value in run.fill:
    return run.fill[value].format(**paths), []
  return value, [value] if PLACEHOLDER.search(value) else []


def command(usage: Usage, paths: Dict[str, pathlib.Path]) -> Tuple[Tuple[str, ...], List[str]]:
  """The argv that runs ``usage`` (its optional parts left out but ``RUNS[module].keep``), and
  the placeholders ``RUNS[module].fill`` lacks."""
  run = RUNS[usage.module]
  argv, unfilled = [sys.executable, "-m", usage.module], []
  for arg in usage.args:
    if not arg.flags:
      word, missing = fill(run, arg.text, paths)
      argv.append(word)
      unfilled += missing
      continue
    chosen = [flag for flag in arg.flags if not arg.optional or flag.name in run.keep][:1]
    for flag in chosen:
      value, missing = fill(run, flag.value, paths) if flag.value else (None, [])
      argv.append(str(Flag(flag.name, value)))
      unfilled += missing
  return tuple(argv), unfilled


def planned() -> List[Usage]:
  """The usage lines that run."""
  return [u for u in HARVEST.usages if u.module in RUNS and skip_reason(u) is None]


def chains() -> List[List[str]]:
  """The RUNS modules in chains that run side by side: a module without ``after``, then those
  that run after it (depth first)."""
  def chain(module):
    return [module] + [m for child, run in RUNS.items() if run.after == module
                       for m in chain(child)]
  return [chain(module) for module, run in RUNS.items() if run.after is None]


def result_of(argv: List[str]) -> Dict[str, object]:
  """``argv``'s exit status and output, run from the repository root."""
  result = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
  return {"returncode": result.returncode, "stdout": result.stdout,
          "stderr": result.stderr[-3000:]}


@dataclasses.dataclass(frozen=True)
class Commands:
  """What the harvested commands did here: ``paths`` of :data:`PATHS`; ``help``: per module
  its ``--help``; ``results``: per runnable line's argv (joined by spaces) its result."""
  paths: Dict[str, pathlib.Path]
  help: Dict[str, Dict[str, object]]
  results: Dict[str, Dict[str, object]]


@pytest.fixture(scope="module")
def readme_commands(tmp_path_factory) -> Commands:
  """Every module of the usage lines asked for ``--help``, and the runnable lines run with
  their placeholders filled (each distinct command once; lines with unfilled placeholders are
  left to their test): the Quick start's workdir and its export, a synthetic corpus and its
  shards, an eval report. The chains and the ``--help`` calls run side by side, as many at a
  time as there are CPUs."""
  modules = sorted({usage.module for usage in HARVEST.usages})

  def build(directory):
    paths = {name: directory / path for name, path in PATHS.items()}
    argvs = {}
    for usage in planned():
      argv, unfilled = command(usage, paths)
      if not unfilled:
        argvs.setdefault(usage.module, {})[" ".join(argv)] = argv
    results = {}

    def run_chain(chain):
      for module in chain:
        for key, argv in argvs.get(module, {}).items():
          results[key] = result_of(argv)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
      done = [pool.submit(run_chain, chain) for chain in chains()]
      answers = dict(zip(modules, pool.map(
          lambda module: result_of([sys.executable, "-m", module, "--help"]), modules)))
      for future in done:
        future.result()
    (directory / "commands.json").write_text(json.dumps({"help": answers, "results": results}))

  directory = shared_directory(tmp_path_factory, "readme_commands", build)
  recorded = json.loads((directory / "commands.json").read_text())
  return Commands({name: directory / path for name, path in PATHS.items()}, recorded["help"],
                  recorded["results"])


def test_harvest_finds_the_readme_commands():
  """The harvest holds README's Quick start command, a usage line for each row of its commands
  table (and of any such table in docs/) and its load_pretrained call: a layout the parser
  misreads fails here."""
  assert DOCS, "no docs/*.md to harvest"
  texts = {usage.text for usage in HARVEST.usages if usage.file == "README.md"}
  assert f"python -m havic_jax.main --config={TINY_CONFIG} --workdir={README_WORKDIR}" in texts
  for path in FILES:
    name = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    rows = [n for n, line in enumerate(lines, 1) if line.startswith("| `python -m ")]
    assert rows or path != README
    assert rows == [u.line for u in HARVEST.usages if u.file == name and u.line in rows], name
  assert ("README.md", "havic_jax.load_pretrained(DIR)") in {
      (name, code) for name, _, code in HARVEST.calls}


def test_harvester_catches_an_unknown_flag():
  """A table cell (escaped choice, bracketed options) and a continued bash line with a
  misspelt flag: each unknown flag is found, the listed ones (and a [no] boolean) are not."""
  readme = ("| `python -m havic_jax.aot --config=CONFIG [--per_chip_batch=B\\|--batch=GLOBAL] "
            "[--nofind_batch] [--bogus=1]` | compiles |\n\n"
            "```bash\npython -m havic_jax.export --workdir=W \\\n"
            "    --output=DIR --outptu=X  # exports\n```\n")
  help_text = ("flags:\n\nhavic_jax/aot.py:\n  --batch: Global batch.\n  --config: Config.\n"
               "  --[no]find_batch: Find it.\n    --bogus is not a definition.\n"
               "  --output: Report.\n  --per_chip_batch: Per chip.\n  --workdir: Workdir.\n")
  aot, export = harvest(readme).usages
  assert (aot.line, aot.module, export.line, export.module) == (
      1, "havic_jax.aot", 4, "havic_jax.export")
  assert [flag.name for flag in aot.flags] == [
      "config", "per_chip_batch", "batch", "nofind_batch", "bogus"]
  assert aot.required == "python -m havic_jax.aot --config=CONFIG"
  assert unknown_flags(aot, help_text) == ["--bogus=1"]
  assert unknown_flags(export, help_text) == ["--outptu=X"]


@pytest.mark.parametrize("key", IDS)
def test_usage_line_flags_are_the_binarys(key, readme_commands):
  """The module answers --help (exit 0) listing every flag of the line; the repository files
  the line names exist."""
  usage = USAGES[key]
  answer = readme_commands.help[usage.module]
  assert answer["returncode"] == 0, f"{usage.text}\n{answer['stderr']}"
  assert not unknown_flags(usage, answer["stdout"]), (
      f"{usage.where}: {usage.text}\nflags that `python -m {usage.module} --help` "
      f"does not list: {unknown_flags(usage, answer['stdout'])}")
  assert not missing_files(usage), f"{usage.text}: no {missing_files(usage)}"


@pytest.mark.parametrize("key", [k for k in IDS if USAGES[k].value("config") is not None
                                 or any(f.name.startswith("config.") for f in USAGES[k].flags)])
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_usage_line_config_loads_with_its_overrides(key):
  """The named config loads with the line's --config.x=y overrides, which must be its fields."""
  usage = USAGES[key]
  config = usage.value("config")
  assert config is not None, f"{usage.where}: --config.x=y without --config"
  if PLACEHOLDER.search(config):
    pytest.skip(f"the config is a placeholder ({config}): --config.x=y names no field of it")
  assert config_error(usage) is None, f"{usage.where}: {config_error(usage)}"


@pytest.mark.parametrize("key", IDS)
def test_usage_line_runs_or_is_skipped(key, request):
  """A line matching a rule of SKIPS is skipped with its reason; a line of a RUNS module runs
  (exit 0, the files its row promises written); any other line fails."""
  usage = USAGES[key]
  reason = skip_reason(usage)
  if reason:
    pytest.skip(reason)
  assert usage.module in RUNS, (
      f"{usage.where}: {usage.text}\nneither runs (RUNS has no {usage.module}) nor "
      f"matches a rule of SKIPS: add the one that applies")
  runs = request.getfixturevalue("readme_commands")
  argv, unfilled = command(usage, runs.paths)
  assert not unfilled, f"{usage.text}: RUNS[{usage.module!r}].fill lacks {unfilled}"
  result = runs.results[" ".join(argv)]
  assert result["returncode"] == 0, f"{' '.join(argv)}\n{result['stderr']}"
  outputs = [path.format(**runs.paths) for path in RUNS[usage.module].outputs]
  assert [path for path in outputs if not os.path.exists(path)] == []


def test_every_rule_applies_to_a_line():
  """Each rule of SKIPS is the first to match some line, and each RUNS module runs a line."""
  first = {next(p for p, _ in SKIPS if re.search(p, u.required))
           for u in HARVEST.usages if skip_reason(u)}
  assert [pattern for pattern, _ in SKIPS if pattern not in first] == []
  assert sorted(RUNS) == sorted({usage.module for usage in planned()})


@pytest.mark.parametrize("block", [code for _, _, code in HARVEST.python_blocks],
                         ids=[f"{name}:L{line}" for name, line, _ in HARVEST.python_blocks])
def test_python_block_runs(block, readme_commands, tmp_path):
  """A fenced python block runs in a fresh interpreter in an empty directory (the repository
  importable, as an install makes it), with the Quick start's workdir where it names
  README_WORKDIR."""
  code = block.replace(README_WORKDIR, str(readme_commands.paths["demo"]))
  path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": path})
  assert result.returncode == 0, result.stderr[-3000:]


def load_pretrained_names(code: str, request) -> Dict[str, object]:
  """``DIR``: the export that README's export line wrote."""
  return {"DIR": str(request.getfixturevalue("readme_commands").paths["export"])}


def check_load_pretrained(result, names) -> None:
  """``(ModelConfig, params)`` of the encoders and the interaction module."""
  cfg, params = result
  assert isinstance(cfg, ModelConfig)
  assert sorted(params) == ["audio_encoder", "interaction", "video_encoder"]


def from_reference_names(code: str, request) -> Dict[str, object]:
  """``state_dict``: a tiny release-layout state_dict of the stage the call names;
  ``model_config``: the tiny model."""
  kind = re.search(r'"(\w+)"\)$', code).group(1)
  source = {stage: name for name, stage in released.HAVIC_SOURCES.items()}[kind]
  return {"state_dict": source_state_dict(TINY, source), "model_config": TINY, "kind": kind}


def check_from_reference(result, names) -> None:
  """Our parameters and a report placing every key, and ``to_reference`` goes back."""
  params, report = result
  accounted_for(report, names["state_dict"])
  back = reference.to_reference(params, names["model_config"], names["kind"])
  for key in report["loaded"]:
    np.testing.assert_array_equal(back[key], names["state_dict"][key], err_msg=key)


# Inline calls into havic_jax: the callable -> (names the call's placeholders take, what its
# result must be).
CALLS = {
    "havic_jax.load_pretrained": (load_pretrained_names, check_load_pretrained),
    "havic_jax.models.reference.from_reference": (from_reference_names, check_from_reference),
}


def expanded_calls() -> List[Tuple[str, str]]:
  """(where, call) of the inline calls, one per choice of their alternative string
  arguments."""
  calls = []
  for file, line, code in HARVEST.calls:
    choice = STRING_CHOICE.search(code)
    options = re.findall(r'"[^"]*"', choice.group(0)) if choice else [None]
    calls += [(f"{file} line {line}",
               code if option is None else code.replace(choice.group(0), option))
              for option in options]
  return calls


@pytest.mark.parametrize("where,code", expanded_calls(), ids=[c for _, c in expanded_calls()])
def test_inline_call_runs(where, code, request):
  """The call runs with its placeholders bound (CALLS) and returns what the text says."""
  name = code.partition("(")[0]
  assert name in CALLS, f"{where}: {code}: CALLS has no {name}"
  names_of, check = CALLS[name]
  names = names_of(code, request)
  importlib.import_module(name.rsplit(".", 1)[0])
  check(eval(code, {"havic_jax": importlib.import_module("havic_jax"), **names}), names)
