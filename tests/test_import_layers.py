"""The package's imports point down its layers (read from the source, nothing imported).

Layers, lowest first; a module may import its own package and lower layers only (a binary may
also run another binary):

  errors       (the base class of errors in what a user asked for)
  foundation   cli, storage, sharding
  media, models
  data, detectors      (siblings: neither imports the other)
  checkpoints
  evaluation
  training
  binaries     main, eval, bench, aot, compare, export, convert, batch_scaling

``havic_jax`` never imports ``configs`` or ``data_pipelines``; configs import only
``ml_collections``, the standard library and ``configs`` itself. No module of ``havic_jax`` or
``data_pipelines`` is over 400 lines.
"""

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "havic_jax"
LAYERS = (
    ("errors",),
    ("cli", "storage", "sharding"),
    ("media", "models"),
    ("data", "detectors"),
    ("checkpoints",),
    ("evaluation",),
    ("training",),
    ("main", "eval", "bench", "aot", "compare", "export", "convert", "batch_scaling"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
CONFIG_IMPORTS = {"ml_collections", "configs"}


def imported_modules(path: pathlib.Path):
  """(line, dotted module) of every import in the file, top level or nested."""
  tree = ast.parse(path.read_text(), str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.lineno, node.module
      for alias in node.names:  # "from havic_jax import data" names a submodule
        yield node.lineno, f"{node.module}.{alias.name}"


def part_of(dotted: str):
  """The top-level part of havic_jax a dotted name lies in (None: the package itself)."""
  names = dotted.split(".")
  return names[1] if len(names) > 1 and names[0] == PACKAGE else None


def package_files():
  return sorted((ROOT / PACKAGE).rglob("*.py"))


def test_every_package_file_lies_in_a_layer():
  parts = {path.relative_to(ROOT / PACKAGE).parts[0].removesuffix(".py")
           for path in package_files()} - {"__init__"}
  assert parts <= set(RANK), f"modules in no layer: {sorted(parts - set(RANK))}"


def test_the_package_imports_point_down_its_layers():
  wrong = []
  for path in package_files():
    relative = path.relative_to(ROOT / PACKAGE)
    own = relative.parts[0].removesuffix(".py")
    for line, module in imported_modules(path):
      top = module.split(".")[0]
      if top in ("configs", "data_pipelines"):
        wrong.append(f"{relative}:{line} imports {module} (outside the package)")
        continue
      target = part_of(module)
      if target is None or target not in RANK or own == "__init__" or target == own:
        continue
      if RANK[target] > RANK[own] or (RANK[target] == RANK[own] < len(LAYERS) - 1):
        wrong.append(f"{relative}:{line} ({own}, layer {RANK[own]}) imports {module} "
                     f"({target}, layer {RANK[target]})")
  assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_configs_import_only_ml_collections_and_themselves():
  allowed = CONFIG_IMPORTS | set(sys.stdlib_module_names)
  wrong = [f"{path.name}:{line} imports {module}"
           for path in sorted((ROOT / "configs").glob("*.py"))
           for line, module in imported_modules(path)
           if module.split(".")[0] not in allowed]
  assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("from havic_jax.training import loop\n", "imports havic_jax.training"),
    ("from configs import common\n", "outside the package"),
])
def test_an_upward_import_is_found(tmp_path, monkeypatch, source, expected):
  """The scan itself can fail: a planted upward import in a data module is reported."""
  fake = tmp_path / PACKAGE / "data"
  fake.mkdir(parents=True)
  (fake / "planted.py").write_text(source)
  monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
  with pytest.raises(AssertionError, match=expected):
    test_the_package_imports_point_down_its_layers()


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines():
  """Every module of the package and of data_pipelines stays short enough to read whole."""
  long = [f"{path.relative_to(ROOT)}: {count} lines"
          for folder in (PACKAGE, "data_pipelines")
          for path in sorted((ROOT / folder).rglob("*.py"))
          if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
  assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)
