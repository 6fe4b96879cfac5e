"""How the learning rate should follow the batch: pretraining runs at several global batches,
learning-rate scalings (``optimizer.lr_scaling``) and seeds, each seeing the same number of
samples, compared by their loss at equal samples seen.

  python -m havic_jax.batch_scaling --workdir=DIR [--config=configs/pretrain_tiny.py] \
      [--batches=8,32,128] [--scalings=none,linear,sqrt] [--seeds=0,1] [--samples=8192]

Each run trains ``--samples`` samples (``num_epochs`` = samples / the data's clips, warm-up
``optimizer.warmup_fraction`` of the run) on ``--data`` (default: the synthetic corpus,
generated under ``DIR/synthetic_data``), logging every ``--log_samples`` samples. At the
config's ``optimizer.reference_batch_size`` every scaling gives the same learning rate, so that
batch runs once per seed and stands for all of them. Runs live in ``DIR/runs/<name>`` and
resume, so re-running the command continues the study. ``DIR/batch_scaling.md`` and ``.json``
hold the table (the mean total loss over the last quarter of the samples, mean and range over
the seeds) and the curves drawn in characters, ``DIR/loss_vs_samples.png`` the curves.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Dict, List, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from havic_jax import cli

FLAGS = flags.FLAGS
# The share of each run's last samples whose logged losses make its final loss.
FINAL_SHARE = 0.25


def run_name(batch: int, scaling: str, seed: int) -> str:
  return f"batch{batch}_{scaling}_seed{seed}"


def run_config(base: Any, batch: int, scaling: str, seed: int, samples: int, clips: int,
               log_samples: int, data: str) -> Any:
  """``base`` at global ``batch`` with ``scaling`` and ``seed``, for ``samples`` samples of
  prepared ``data`` (``clips`` clips per epoch)."""
  config = base.copy_and_resolve_references()
  config.unlock()
  config.batch_size, config.seed = batch, seed
  config.optimizer.lr_scaling = scaling
  config.num_steps, config.num_epochs = None, samples / clips
  config.optimizer.warmup_steps = config.optimizer.warmup_epochs = None
  config.log_every = max(1, log_samples // batch)
  config.checkpoint.every_steps = 10 ** 9  # saved at the end only
  config.image_every = 0
  config.data.source, config.data.path = "prepared", data
  return config


def curve(workdir: pathlib.Path, batch: int) -> List[List[float]]:
  """[[samples seen, total loss of the logging window ending there], ...] of a run."""
  path = workdir / "metrics.jsonl"
  lines = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
  return [[line["step"] * batch, line["total"]] for line in lines if "total" in line]


def final_loss(points: Sequence[Sequence[float]], samples: int) -> float:
  """The mean loss of the windows ending in the last :data:`FINAL_SHARE` of ``samples``."""
  last = [loss for seen, loss in points if seen > (1 - FINAL_SHARE) * samples]
  return sum(last) / len(last)


def study(base: Any, workdir: str, batches: Sequence[int], scalings: Sequence[str],
          seeds: Sequence[int], samples: int, log_samples: int, data: str) -> Dict[str, Any]:
  """Trains every run that is not finished; returns the study (rows and curves)."""
  from havic_jax.data import records, training_data
  from havic_jax.training import builder, loop, run_length
  root = pathlib.Path(workdir)
  prepared = data or str(training_data.synthetic_corpus(root / "synthetic_data",
                                                        base.data.synthetic_videos, base.seed))
  reference = base.optimizer.reference_batch_size
  probe = run_config(base, batches[0], "none", 0, samples, 1, log_samples, prepared)
  clips = run_length.training_clips(records.open_prepared(prepared), probe,
                                    builder.real_clips_only(probe))
  rows, curves = [], {}
  for batch in batches:
    for scaling in scalings:
      ran = "none" if batch == reference else scaling  # every scaling is 1× there
      losses, seconds = [], []
      for seed in seeds:
        name = run_name(batch, ran, seed)
        config = run_config(base, batch, ran, seed, samples, clips, log_samples, prepared)
        run_dir = root / "runs" / name
        resolved = builder.with_run_length(config, records.open_prepared(prepared))
        if name not in curves:
          points = curve(run_dir, batch)
          if not points or points[-1][0] < resolved.num_steps * batch:
            logging.info("%s: %d steps", name, resolved.num_steps)
            started = time.time()
            loop.run(config, str(run_dir))
            (run_dir / "seconds.txt").write_text(f"{time.time() - started:.1f}\n")
          curves[name] = curve(run_dir, batch)
        losses.append(final_loss(curves[name], samples))
        seconds.append(float((run_dir / "seconds.txt").read_text()))
      scale = run_length.learning_rate_scale(scaling, batch, reference)
      rows.append({"batch": batch, "scaling": scaling, "run_as": ran,
                   "peak_learning_rate": base.optimizer.peak_learning_rate * scale,
                   "steps": resolved.num_steps, "final_loss": losses,
                   "mean": sum(losses) / len(losses), "range": max(losses) - min(losses),
                   "seconds": seconds})
  return {"config": base.to_dict(), "samples": samples, "clips_per_epoch": clips,
          "reference_batch_size": reference, "seeds": list(seeds), "rows": rows,
          "curves": curves}


def table(result: Dict[str, Any]) -> str:
  """The study as a markdown table."""
  lines = [f"{result['samples']} samples per run ({result['clips_per_epoch']} clips per "
           f"epoch), seeds {result['seeds']}, learning rates tuned at batch "
           f"{result['reference_batch_size']}; final loss: the mean total loss over the last "
           f"{FINAL_SHARE:.0%} of the samples (mean over seeds, ± half their range)", "",
           "| batch | lr_scaling | peak lr | steps | final loss | seconds per run |",
           "|---|---|---|---|---|---|"]
  for row in result["rows"]:
    lines.append(f"| {row['batch']} | {row['scaling']} | {row['peak_learning_rate']:.3g} | "
                 f"{row['steps']} | {row['mean']:.3f} ± {row['range'] / 2:.3f} | "
                 f"{sum(row['seconds']) / len(row['seconds']):.0f} |")
  return "\n".join(lines) + "\n"


def mean_curve(result: Dict[str, Any], row: Dict[str, Any]) -> List[List[float]]:
  """[[samples seen, loss averaged over the seeds], ...] of a table row."""
  runs = [result["curves"][run_name(row["batch"], row["run_as"], s)] for s in result["seeds"]]
  return [[runs[0][i][0], sum(run[i][1] for run in runs) / len(runs)]
          for i in range(min(len(run) for run in runs))]


def text_plot(result: Dict[str, Any], width: int = 72, height: int = 24) -> str:
  """The curves as characters (for markdown): loss (log scale) against samples seen, one letter
  per row of the table (``batch`` then the scaling's initial), later rows drawn over earlier."""
  import math
  curves = {f"{row['batch']}{row['scaling'][0]}": mean_curve(result, row)
            for row in result["rows"] if row["batch"] != result["reference_batch_size"]
            or row["scaling"] == "none"}
  losses = [loss for points in curves.values() for _, loss in points]
  low, high = math.log(min(losses)), math.log(max(losses))
  grid = [[" "] * width for _ in range(height)]
  marks = {}
  for index, (name, points) in enumerate(curves.items()):
    mark = "abcdefghijklmnopqrstuvwxyz"[index]
    marks[mark] = name
    for seen, loss in points:
      x = min(width - 1, int(seen / result["samples"] * (width - 1)))
      y = int((high - math.log(loss)) / max(high - low, 1e-9) * (height - 1))
      grid[y][x] = mark
  lines = [f"{math.exp(high - (high - low) * r / (height - 1)):7.3f} |" + "".join(row)
           for r, row in enumerate(grid)]
  lines.append(" " * 8 + "+" + "-" * width)
  lines.append(" " * 9 + f"0 samples seen {result['samples']:>{width - 16}}")
  legend = ", ".join(f"{mark}: batch {name[:-1]} {dict(n='none', l='linear', s='sqrt')[name[-1]]}"
                     for mark, name in marks.items())
  return "\n".join(lines + ["", legend])


def plot(result: Dict[str, Any], path: pathlib.Path) -> None:
  """Loss against samples seen, one panel per batch, one line per scaling (mean over seeds)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  batches = sorted({row["batch"] for row in result["rows"]})
  figure, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.4), sharey=True,
                              squeeze=False)
  for axis, batch in zip(axes[0], batches):
    for row in (r for r in result["rows"] if r["batch"] == batch):
      seen, mean = zip(*mean_curve(result, row))
      axis.plot(seen, mean, label=f"{row['scaling']} (lr {row['peak_learning_rate']:.2g})")
    axis.set_title(f"batch {batch}")
    axis.set_xlabel("samples seen")
    axis.legend(fontsize=8)
  axes[0][0].set_ylabel("pretraining loss (total)")
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(inputs={"--data": FLAGS.data}, output_dirs={"--workdir": FLAGS.workdir})
  cli.enable_compilation_cache()
  result = study(FLAGS.config, FLAGS.workdir, [int(b) for b in FLAGS.batches], FLAGS.scalings,
                 [int(s) for s in FLAGS.seeds], FLAGS.samples, FLAGS.log_samples, FLAGS.data)
  root = pathlib.Path(FLAGS.workdir)
  (root / "batch_scaling.json").write_text(json.dumps(result, indent=1))
  (root / "batch_scaling.md").write_text(
      table(result) + "\n```\n" + text_plot(result) + "\n```\n")
  plot(result, root / "loss_vs_samples.png")
  print((root / "batch_scaling.md").read_text())
  print(f"plot: {root / 'loss_vs_samples.png'}")


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      "config", "configs/pretrain_tiny.py", "Pretraining config file; override fields with "
      "--config.x=y.", lock_config=False)
  flags.DEFINE_string("workdir", None, "Directory of the runs, the table and the plot.")
  flags.DEFINE_string("data", "", "Prepared data to train on (default: the synthetic corpus "
                      "under WORKDIR/synthetic_data).")
  flags.DEFINE_list("batches", ["8", "32", "128"], "Global batch sizes.")
  flags.DEFINE_list("scalings", ["none", "linear", "sqrt"], "optimizer.lr_scaling values.")
  flags.DEFINE_list("seeds", ["0", "1"], "Seeds (initialisation, masks, data order).")
  flags.DEFINE_integer("samples", 8192, "Samples each run trains on.", lower_bound=1)
  flags.DEFINE_integer("log_samples", 256, "Samples per logging window.", lower_bound=1)
  cli.define_compilation_cache_flag()
  flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
