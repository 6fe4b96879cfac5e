"""Config files are data: they load with their arguments without the library, every detector has
every size, the short file names spell the same configs, and the values the library also needs
as defaults agree with it."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import ml_collections
import pytest
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from configs import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
DETECTOR_STAGES = {"havic": ("pretrain", "finetune"), "consistency": ("pretrain",),
                   "voice_face": ("pretrain", "finetune"), "fine_grained": ("finetune",),
                   "fakeout": ("finetune",)}
ALIASES = {
    "pretrain_tiny": "havic.py:stage=pretrain,size=tiny",
    "pretrain_base": "havic.py:stage=pretrain,size=base",
    "finetune_tiny": "havic.py:stage=finetune,size=tiny",
    "finetune_base": "havic.py:stage=finetune,size=base",
    "consistency_tiny": "consistency.py:size=tiny",
    "fakeout_tiny": "fakeout.py:size=tiny",
    "fine_grained_tiny": "fine_grained.py:size=tiny",
    "voice_face_pretrain_tiny": "voice_face.py:stage=pretrain,size=tiny",
    "voice_face_finetune_tiny": "voice_face.py:stage=finetune,size=tiny",
}
SPELLINGS = [f"{name}.py:stage={stage},size={size}" for name, stages in DETECTOR_STAGES.items()
             for stage in stages for size in common.SIZES]


def load(spelling: str) -> ml_collections.ConfigDict:
  """``configs/FILE:ARGS`` as ``--config`` loads it."""
  return ConfigFileFlagParser("config").parse(f"{ROOT}/configs/{spelling}")


def test_every_config_file_loads_without_the_library():
  files = SPELLINGS + [f"{alias}.py" for alias in ALIASES]
  script = (
      "import sys\n"
      "from ml_collections.config_flags.config_flags import ConfigFileFlagParser\n"
      "from configs.tiny import tiny_model\n"
      f"for spelling in {files!r}:\n"
      "  ConfigFileFlagParser('config').parse('configs/' + spelling)\n"
      "tiny_model()\n"
      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('havic_jax', 'data_pipelines',"
      " 'jax', 'flax')))\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_detector_has_every_size(spelling):
  config = load(spelling)
  name = spelling.split(".py")[0]
  args = dict(arg.split("=") for arg in spelling.split(":")[1].split(","))
  assert (config.detector.name, config.stage) == (name, args["stage"])
  sizes = ("image_size", "audio_frames", "width", "depth", "tap_layers", "decoder_width")
  assert {k: config.model[k] for k in sizes} == {k: common.MODELS[args["size"]][k] for k in sizes}
  assert config.batch_size == {"tiny": 8, "base": 112 if args["stage"] == "pretrain" else 32}[
      args["size"]]


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_are_the_new_spelling(alias):
  assert load(f"{alias}.py").to_dict() == load(ALIASES[alias]).to_dict()


def test_the_default_stage_is_the_first():
  assert load("havic.py:size=tiny").stage == "pretrain"
  assert load("fakeout.py").stage == "finetune" and load("fakeout.py").model.width == 768


@pytest.mark.parametrize("spelling, message", [
    ("fakeout.py:stage=pretrain", "stage must be one of"),
    ("havic.py:size=huge", "size must be one of"),
    ("havic.py:depth=3", "expected k=v with k one of"),
    ("havic.py:size", "expected k=v"),
])
def test_bad_arguments_are_named(spelling, message):
  with pytest.raises(ValueError, match=message):
    load(spelling)


def test_parse_arg_converts_to_the_defaults_types():
  args = common.parse_arg("steps=3,rate=0.5,name=x,fast=true", steps=1, rate=1.0, name="",
                          fast=False)
  assert args.to_dict() == {"steps": 3, "rate": 0.5, "name": "x", "fast": True}
  assert common.parse_arg(None, steps=1).steps == common.parse_arg("", steps=1).steps == 1
  with pytest.raises(ValueError, match="true or false"):
    common.parse_arg("fast=1", fast=False)


def test_overrides_reach_the_loaded_config():
  """``--config.mesh.batch_axes`` style overrides: the config is a plain ConfigDict."""
  config = load("pretrain_tiny.py")
  assert config.mesh.batch_axes == ("data", "fsdp")
  assert ("batch", config.mesh.batch_axes) in config.sharding_rules
  json.dumps(config.to_dict())  # config.json is written from it


def test_base_sizes_build_model_config_defaults():
  """``ModelConfig``'s field defaults fill fields that older config.json files and exports lack,
  so they repeat the base sizes; they must stay equal."""
  from havic_jax.models.config import ModelConfig, model_config_from
  assert model_config_from(common.model_config("base"), "reference") == ModelConfig()
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  assert set(common.BASE_MODEL) == fields


def test_augmentation_and_pseudo_fake_sections_build_the_library_options_with_the_spec_values():
  """The library's option dataclasses have no defaults of their own: they are built from
  ``config.augment`` / ``config.pseudo_fakes`` (spec §11: masks of 20 bins and 100 frames at
  the base input, scaled with a smaller one)."""
  from havic_jax.data import augment, pseudo_fakes
  config = load("fine_grained.py:size=base")
  assert augment.Options(**config.augment) == augment.Options(20, 100, video=True, audio=True)
  tiny = load("fine_grained.py:size=tiny").augment
  assert (tiny.freq_mask, tiny.time_mask) == (20 * 64 // 128, 100 * 128 // 1024)
  options = {k: v for k, v in config.pseudo_fakes.items() if k != "enabled"}
  assert pseudo_fakes.PseudoFakeOptions(**options) == pseudo_fakes.PseudoFakeOptions(
      probability=0.5, r_min=0.0, r_max=1.0, min_units=2)


def test_the_detector_files_cover_the_registry():
  from havic_jax import detectors
  assert {name: d.stages for name, d in detectors.DETECTORS.items()} == DETECTOR_STAGES


def none_fields(config, prefix=""):
  """(dotted name, its type) of every field of ``config`` whose value is None."""
  fields = []
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      fields += none_fields(value, f"{prefix}{key}.")
    elif value is None:
      fields.append((f"{prefix}{key}", config.get_ref(key).get_type()))
  return fields


# A value of each type a None-valued field may take, as the command line spells it.
COMMAND_LINE_VALUES = {str: ("time", "time"), bool: ("true", True), int: ("3", 3),
                       float: ("0.5", 0.5)}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_field_that_defaults_to_none_overrides_from_the_command_line(spelling):
  """Through absl's flag parser, as ``main --config=... --config.x=y`` parses them."""
  from absl import flags
  from ml_collections import config_flags
  fields = none_fields(load(spelling))
  assert {name.split(".")[-1] for name, _ in fields} <= set(common.OPTIONAL_FIELDS)
  for name, kind in fields + [("model.attention_impl", str)]:
    text, value = COMMAND_LINE_VALUES[kind]
    argv = ["main", f"--config={ROOT}/configs/{spelling}", f"--config.{name}={text}"]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    node = flag_values.config
    for part in name.split("."):
      node = node[part]
    assert node == value, name
