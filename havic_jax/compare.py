"""Trains several detectors on one prepared corpus and scores them with the eval binary on the
same videos and protocol, so their numbers can be put side by side.

  python -m havic_jax.compare --data=PREPARED --eval_data=VIDEOS --workdir=DIR \
      --detectors=havic,consistency,voice_face,fine_grained,fakeout --protocol=fakeavceleb_intra \
      --configs='configs/{detector}.py:size=tiny'

Each detector trains its stages (``havic_jax.detectors.DETECTORS[name].stages``) in order, each
a training run of the config ``--configs`` spells for it (``{detector}`` stands for its name;
``stage=STAGE`` is added to the file's arguments, e.g. ``configs/voice_face.py:size=tiny,
stage=pretrain``) on ``--data``'s ``train`` split (pretraining stages on its real clips only),
later stages initialised from the previous stage's workdir. Every run lives in
``DIR/<detector>/<stage>`` and resumes if it is there already, so re-running the command after a
stop continues it. The eval report of each detector is in ``DIR/<detector>/eval``;
``DIR/comparison.md`` and ``comparison.json`` hold the table.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app, flags, logging
from etils import epath

from havic_jax import cli, detectors, storage

FLAGS = flags.FLAGS
DEFAULT_CONFIGS = "configs/{detector}.py:size=tiny"


@dataclasses.dataclass
class StageRun:
  """One training run of a detector: its stage, the config it trained (``FILE:ARGS``) and its
  wall time in seconds (None: the workdir held the final checkpoint already, so nothing ran)."""
  stage: str
  config: str
  steps: int
  seconds: Optional[float]


def stage_spelling(configs: str, detector: str, stage: str) -> str:
  """``FILE:ARGS`` of ``detector``'s ``stage``: ``configs`` with ``{detector}`` filled in and
  ``stage=STAGE`` added to the arguments."""
  spelling = configs.format(detector=detector)
  return f"{spelling}{',' if ':' in spelling else ':'}stage={stage}"


def load_config(spelling: str, detector: str) -> Any:
  """The (unlocked) config ``FILE:ARGS`` names, as ``--config`` of the training binary would
  load it, checked to train ``detector``."""
  if not os.path.isfile(spelling.partition(":")[0]):
    raise ValueError(f"{spelling}: no config file there (--configs spells each detector's "
                     f"config file, e.g. {DEFAULT_CONFIGS!r})")
  config = cli.load_config_file(spelling)
  if config.detector.name != detector:
    raise ValueError(f"{spelling} trains detector {config.detector.name!r}, not {detector!r}")
  return config


def recipe_configs(detector: str, configs: str, data: str, steps: Dict[str, Optional[int]],
                   log_every: int) -> List[Tuple[str, Any]]:
  """[(``FILE:ARGS``, config)] of ``detector``'s stages on the prepared ``data``: the train
  split (real clips only when pretraining), ``steps[stage]`` steps when set."""
  if detector not in detectors.DETECTORS:
    raise ValueError(f"unknown detector {detector!r}; one of {sorted(detectors.DETECTORS)}")
  stage_configs = []
  for stage in detectors.DETECTORS[detector].stages:
    spelling = stage_spelling(configs, detector, stage)
    config = load_config(spelling, detector)
    config.data.source, config.data.path, config.data.split = "prepared", data, "train"
    if stage == "pretrain":
      config.data.real_only = True
    if steps.get(stage):
      config.num_steps = steps[stage]
    config.log_every = min(log_every, config.num_steps or log_every)
    stage_configs.append((spelling, config))
  return stage_configs


def train_recipe(detector: str, configs: Sequence[Tuple[str, Any]], workdir: epath.Path
                 ) -> Tuple[epath.Path, List[StageRun]]:
  """Runs the stages in order (each from the previous one's workdir) -> the last workdir and
  the runs."""
  from havic_jax.checkpoints import runs
  from havic_jax.data import records
  from havic_jax.training import builder, loop
  previous: Optional[epath.Path] = None
  stage_runs = []
  for name, config in configs:
    stage_dir = workdir / detector / config.stage
    # Its length in steps (from epochs of its training clips, where it counts epochs).
    config = builder.with_run_length(config, records.open_prepared(config.data.path))
    if previous is not None:
      config.init_from = str(previous)
    seconds = None
    if not (stage_dir / runs.CHECKPOINT_DIR / str(config.num_steps)).is_dir():
      logging.info("%s: %s for %d steps in %s", detector, name, config.num_steps, stage_dir)
      start = time.time()
      loop.run(config, str(stage_dir))
      seconds = time.time() - start
    stage_runs.append(StageRun(config.stage, name, config.num_steps, seconds))
    previous = stage_dir
  return previous, stage_runs


def summary_row(detector: str, runs: Sequence[StageRun], outcome: Dict[str, Any]
                ) -> Dict[str, Any]:
  """The comparison row of one detector from its runs and the eval binary's outcome."""
  from havic_jax.evaluation import reports
  overall = outcome["results"][0]
  row: Dict[str, Any] = {
      "detector": detector, "paper": detectors.DETECTORS[detector].paper,
      "stages": [dataclasses.asdict(r) for r in runs],
      "overall": {column: {m: values[m] for m in overall.metric_names}
                  for column, values in overall.columns.items()},
      "statuses": reports.status_counts(outcome["videos"]),
  }
  if len(outcome["results"]) > 1:
    row["categories"] = {c: v["auc"] for c, v in outcome["results"][1].columns.items()}
  return row


def _percent(value: Optional[float]) -> str:
  return "–" if value is None or value != value else f"{100 * value:.2f}"


def comparison_markdown(rows: Sequence[Dict[str, Any]], protocol: str, eval_data: str) -> str:
  """The comparison table: one row per detector, video-level AUC / AP / ACC of the protocol's
  first column, then AUC per fake category (each against all real videos)."""
  categories: List[str] = []
  for row in rows:
    categories += [c for c in row.get("categories", {}) if c not in categories]
  header = ["detector", "training (steps, s)", "AUC", "AP", "ACC"] + [
      f"AUC {c}" for c in categories]
  lines = [f"# Detector comparison: `{protocol}` on `{eval_data}`", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    values = next(iter(row["overall"].values()))
    training = ", ".join(f"{r['config']} {r['steps']} " + (
        "(done before)" if r["seconds"] is None else f"({r['seconds']:.0f} s)")
        for r in row["stages"])
    cells = [row["detector"], training] + [_percent(values.get(m)) for m in ("auc", "ap", "acc")]
    cells += [_percent(row.get("categories", {}).get(c)) for c in categories]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Metrics in %, video level, each detector's last training step; – where a "
            "detector has no decision threshold (no ACC) or a category is absent.", ""]
  return "\n".join(lines)


def run(detector_names: Sequence[str], data: str, eval_data: str, workdir: str, *,
        configs: str = DEFAULT_CONFIGS, protocol: str = "fakeavceleb_intra",
        steps: Optional[Dict[str, Optional[int]]] = None, log_every: int = 50, workers: int = 0,
        batch_size: int = 32) -> List[Dict[str, Any]]:
  """Trains and scores each detector; writes ``comparison.md`` / ``comparison.json`` in
  ``workdir`` (a local path or a ``gs://`` URI) and returns the rows."""
  from havic_jax.evaluation import evaluate
  root = storage.path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  plans = {d: recipe_configs(d, configs, data, steps or {}, log_every) for d in detector_names}
  rows = []
  for detector, stage_configs in plans.items():
    last, runs = train_recipe(detector, stage_configs, root)
    # The last step, not the best by validation AUC: the validation clips come from the
    # videos scored here, so choosing by them would flatter every detector.
    outcome = evaluate.run(str(last), eval_data, evaluate.EvalOptions(
        protocol=protocol, output=str(root / detector / "eval"),
        step=stage_configs[-1][1].num_steps, workers=workers, batch_size=batch_size))
    rows.append(summary_row(detector, runs, outcome))
    meta = {"protocol": protocol, "data": data, "eval_data": eval_data, "configs": configs,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (root / "comparison.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (root / "comparison.md").write_text(comparison_markdown(rows, protocol, eval_data))
  return rows


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(inputs={"--data": FLAGS.data, "--eval_data": FLAGS.eval_data},
                  output_dirs={"--workdir": FLAGS.workdir})
  run(FLAGS.detectors, FLAGS.data, FLAGS.eval_data or FLAGS.data, FLAGS.workdir,
      configs=FLAGS.configs, protocol=FLAGS.protocol,
      steps={"pretrain": FLAGS.pretrain_steps, "finetune": FLAGS.finetune_steps},
      log_every=FLAGS.log_every, workers=FLAGS.workers, batch_size=FLAGS.batch_size)
  print((storage.path(FLAGS.workdir) / "comparison.md").read_text())


def define_flags() -> None:
  from havic_jax.evaluation.protocols import PROTOCOLS
  flags.DEFINE_list("detectors", list(detectors.DETECTORS), f"Detectors to train and score, "
                    f"of {list(detectors.DETECTORS)}.")
  flags.DEFINE_string("data", None, "Prepared shards (python -m data_pipelines.prepare) to "
                      "train on (their train split).")
  flags.DEFINE_string("eval_data", None, "What the eval binary scores (default: --data): raw "
                      "videos, a CSV, or prepared shards.")
  flags.DEFINE_string("workdir", None, "Directory of the runs, reports and comparison table.")
  flags.DEFINE_string("configs", DEFAULT_CONFIGS, "Each detector's config file and arguments "
                      "(FILE:ARGS as --config of the training binary takes it), {detector} "
                      "standing for the detector's name; each stage adds stage=STAGE to the "
                      "arguments. configs/{detector}.py:size=base trains every detector at the "
                      "paper's sizes.")
  flags.DEFINE_enum("protocol", "fakeavceleb_intra", PROTOCOLS, "Eval protocol.")
  flags.DEFINE_integer("pretrain_steps", None, "Steps of every pretraining stage (default: "
                       "the config's).", lower_bound=1)
  flags.DEFINE_integer("finetune_steps", None, "Steps of every fine-tuning stage (default: "
                       "the config's).", lower_bound=1)
  flags.DEFINE_integer("log_every", 50, "Steps per logging window.", lower_bound=1)
  flags.DEFINE_integer("workers", 0, "Eval binary's decode / face-detection processes.",
                       lower_bound=0)
  flags.DEFINE_integer("batch_size", 32, "Eval windows per batch.", lower_bound=1)
  flags.mark_flags_as_required(["data", "workdir"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
