"""Writes the synthetic talking-face corpus (``havic_jax.data.synthetic``).

  python -m data_pipelines.synthetic --output=/tmp/synth --videos=8 [--seed=0] [--duration=4]
"""

import pathlib
import time
from typing import Sequence

from absl import app, flags

from havic_jax import cli
from havic_jax.data.synthetic import MIN_DURATION_S, TYPES, generate_corpus

FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  started = time.time()
  rows = generate_corpus(FLAGS.output, FLAGS.videos, FLAGS.seed, FLAGS.duration, progress=True)
  per_type = ", ".join(f"{sum(r['type'] == t for r in rows)} {t}" for t in TYPES)
  print(f"wrote {len(rows)} videos ({per_type}) of {FLAGS.duration:g} s to "
        f"{pathlib.Path(FLAGS.output) / 'FakeAVCeleb'} in {time.time() - started:.1f} s")


def define_flags() -> None:
  flags.DEFINE_string("output", None,
                      "Directory to write FakeAVCeleb/ (videos, meta_data.csv) in.")
  flags.DEFINE_integer("videos", None, "Total videos across the four FakeAVCeleb types.",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes the same corpus.")
  flags.DEFINE_float("duration", 4.0, "Length of each video in seconds.",
                     lower_bound=MIN_DURATION_S)
  flags.mark_flags_as_required(["output", "videos"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
