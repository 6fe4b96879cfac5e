"""Raw videos -> ArrayRecord shards of 3.2 s clips and a manifest.json (``havic_jax.data.prepare``).

  python -m data_pipelines.prepare --dataset=fakeavceleb --input=DIR --output=DIR [--workers=N]
  python -m data_pipelines.prepare ... --runner=beam [--beam_options="--runner=DirectRunner
      --direct_num_workers=2 --direct_running_mode=multi_processing"]
"""

import os
import time
from typing import Optional, Sequence

from absl import app, flags

from havic_jax import cli, storage
from havic_jax.data import records
from havic_jax.data.prepare import CROPS, PrepareOptions, ShardRunner, prepare
from havic_jax.data.sources import FAKEAVCELEB_SPLIT_SEED, READERS

FLAGS = flags.FLAGS
RUNNERS = ("local", "beam")  # this machine's worker processes, or an Apache Beam pipeline


def shard_runner(runner: str, beam_options: str = "") -> Optional[ShardRunner]:
  """The shard runner ``prepare`` takes for ``--runner`` (None: the local one)."""
  if runner not in RUNNERS:
    raise ValueError(f"--runner must be one of {RUNNERS}, got {runner!r}")
  if runner == "local":
    return None
  from havic_jax.data import beam  # the [beam] extra
  return beam.runner(beam_options)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_paths(inputs={"--input": "" if FLAGS.input_uri else FLAGS.input},
                  output_dirs={"--output": FLAGS.output})
  started = time.time()
  options = PrepareOptions(FLAGS.frame_encoding, FLAGS.clip_hop, FLAGS.max_clips_per_video,
                           FLAGS.crop, FLAGS.detect_every)
  manifest = prepare(FLAGS.dataset, FLAGS.input, FLAGS.output, FLAGS.workers,
                     FLAGS.videos_per_shard, options, FLAGS.split_seed, FLAGS.split_by,
                     shard_runner(FLAGS.runner, FLAGS.beam_options), FLAGS.input_uri)
  counts = manifest["counts"]
  elapsed = time.time() - started
  reasons = ", ".join(f"{n} {code}" for code, n in counts["rejected_by_reason"].items() if n)
  print(f"{counts['clips']} clips from {counts['videos_prepared']} of {counts['videos']} videos "
        f"in {len(manifest['shards'])} shards -> {FLAGS.output} ({elapsed:.1f} s)")
  if counts["videos_rejected"]:
    print(f"{counts['videos_rejected']} videos rejected ({reasons}); see 'rejected' in "
          f"{storage.path(FLAGS.output) / records.MANIFEST}")


def define_flags() -> None:
  flags.DEFINE_enum("dataset", None, sorted(READERS), "Layout of --input (spec §14).")
  flags.DEFINE_string("input", None, "Dataset directory, or the CSV for --dataset=csv.")
  flags.DEFINE_string("output", None, "Directory (or gs:// location) for the shards and "
                      "manifest.json.")
  flags.DEFINE_string("input_uri", "", "Read the videos from this location instead of "
                      "--input (e.g. gs://BUCKET/voxceleb2, holding the same files as the "
                      "--input directory or the --input CSV's folder), for workers that do not "
                      "see --input, such as Dataflow's. --input (a local copy or a gcsfuse "
                      "mount) still gives the listing, labels and splits.")
  flags.DEFINE_enum("runner", "local", list(RUNNERS),
                    "local: --workers processes on this machine; beam: an Apache Beam pipeline "
                    "(pip install 'havic_jax[beam]') configured by --beam_options, writing the "
                    "same shards; its progress is the runner's (Beam counters prepare/videos, "
                    "prepare/clips, prepare/videos_rejected).")
  flags.DEFINE_string("beam_options", "", "Beam pipeline options for --runner=beam, as one "
                      "command-line string, e.g. \"--runner=DirectRunner --direct_num_workers=2 "
                      "--direct_running_mode=multi_processing\" or \"--runner=DataflowRunner "
                      "--project=P --region=R --temp_location=gs://B/tmp ...\" (default: "
                      "DirectRunner in this process).")
  flags.DEFINE_integer("workers", max(1, (os.cpu_count() or 1)),
                       "Processes decoding videos with --runner=local (1: in this process).",
                       lower_bound=1)
  flags.DEFINE_integer("videos_per_shard", 64, "Videos per ArrayRecord shard.", lower_bound=1)
  flags.DEFINE_enum("frame_encoding", "jpeg", list(records.FRAME_ENCODINGS),
                    "How face crops are stored: JPEG (quality 95) or raw uint8.")
  flags.DEFINE_float("clip_hop", None, "Seconds between clip starts (default: back to back).")
  flags.DEFINE_integer("max_clips_per_video", None, "Keep at most this many clips per video.")
  flags.DEFINE_enum("crop", "face", list(CROPS),
                    "face: MTCNN face crops (videos without faces are rejected); centre: each "
                    "frame's centre square, for out-of-domain clips without faces (e.g. "
                    "--dataset=folder of AudioSet-style videos, mixed into pretraining with "
                    "--config.data.mixture).")
  flags.DEFINE_integer("detect_every", 1, "Run the face detector on every k-th of a clip's 16 "
                       "frames (and its last) and interpolate the boxes in between: about k "
                       "times less detection time (1: every frame; BENCHMARKS.md has the crop "
                       "agreement for k = 2, 4).", lower_bound=1)
  flags.DEFINE_integer("split_seed", FAKEAVCELEB_SPLIT_SEED, "Seed of FakeAVCeleb's 70/30 split.")
  flags.DEFINE_enum("split_by", "video", ["video", "identity"],
                    "FakeAVCeleb's 70/30 split draws videos (paper) or source identities.")
  flags.mark_flags_as_required(["dataset", "input", "output"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
