"""The eval binary: scores videos and deepfake benchmarks with the paper's protocols (spec §12).

  python -m havic_jax.eval --checkpoint=PATH --data=CSV_OR_DIR --protocol=NAME --output=DIR

Data (``--data``): a CSV ``video_path,overall_label[,audio_label,visual_label,category,
generator]`` (KoDF, HiFi-AVDF, own lists), a FakeAVCeleb directory (with ``meta_data.csv``), a
folder of unlabelled videos (scores and statuses, no metrics), or prepared shards (a
``data_pipelines.prepare`` output with ``manifest.json``; each stored 3.2 s clip is one window).
Checkpoints: a fine-tuning or pretraining workdir, or an export (ours, or reference weights
converted with ``python -m havic_jax.convert``).

Raw videos are cut into 16-frame windows at 5 fps with a 0.4 s hop up to ``--max_seconds``
(``havic_jax.media.windows``); windows of several videos are batched on the device mesh; a
video's score is sigmoid(mean window logit). ``--scorer=coherence`` needs no fine-tuning: each
window's score is how little its audio and video segment embeddings agree, ``(1 − cos) / 2``,
and the least coherent windows are reported as the likely manipulated moments.

Protocols: ``all`` (every labelled video), ``fakeavceleb_intra`` (the seeded 70/30 test part),
``fakeavceleb_loo`` (leave one category out; ``--checkpoint=RVFA=DIR1,FVRA-WL=DIR2,...`` gives
each category its own model), ``kodf``, ``hifi_avdf`` (per generator) and ``robustness``
(every video re-encoded, H.264 CRF 23 / 44.1 kHz and CRF 40 / 16 kHz, then scored).
Writes results.json, results.md, roc.png, pr.png, per_video.csv and per_window.csv. A file
that cannot be read, or has no face or no audio, gets a status and is counted; none stops the
run or disappears.

At scale (``--windows=DIR``): the video work is cut into window shards first, on this
machine's processes or an Apache Beam pipeline (``--runner=beam``; ``--windows_only`` stops
there), then every process joined by ``jax.distributed`` (``--multihost``) scores its share of
the shards on its own devices into ``OUTPUT/scores`` and process 0 writes the same report;
both steps resume where a killed run stopped (``evaluation.window_shards``,
``evaluation.shard_scoring``).

The pieces live in ``havic_jax.evaluation``: ``evaluate`` (the run as a library call:
``evaluate.run(checkpoint, data, EvalOptions(...))``), ``videos`` (what ``--data`` holds),
``inputs`` (window inputs, worker pool), ``per_video`` (video scores), ``protocols`` (columns
and tables), ``reports`` (the files); this module holds the flags, :func:`options_from_flags`
and :func:`main`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
from absl import app, flags

from havic_jax import cli, storage
from havic_jax.data import sources
from havic_jax.evaluation import evaluate, protocols, reports, window_shards
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax.media import windows

FLAGS = flags.FLAGS


def options_from_flags(values: flags.FlagValues = FLAGS) -> EvalOptions:
  """The evaluation options the parsed flags ``values`` ask for (every field of
  :class:`EvalOptions` from the flag of its name)."""
  named = {field.name: getattr(values, field.name) for field in dataclasses.fields(EvalOptions)}
  return EvalOptions(**{**named, "output": named["output"] or ""})  # unset with --windows_only


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.windows_only and not FLAGS.windows:
    raise app.UsageError("--windows_only needs --windows=DIR, where the window shards go")
  if not (FLAGS.output or FLAGS.windows_only):
    raise app.UsageError("--output=DIR is required (except with --windows_only)")
  checkpoints = (item.rpartition("=") for item in FLAGS.checkpoint.split(","))
  cli.check_paths(inputs={"--data": FLAGS.data,
                          **{"--checkpoint" + (f" ({category})" if category else ""): path
                             for category, _, path in checkpoints}},
                  output_dirs={"--output": FLAGS.output, "--windows": FLAGS.windows})
  cli.initialize_distributed()
  cli.enable_compilation_cache()
  outcome = evaluate.run(FLAGS.checkpoint, FLAGS.data, options_from_flags())
  if FLAGS.windows_only:
    print(f"windows: {storage.path(FLAGS.windows)}; score them with the same command without "
          f"--windows_only (on any number of hosts: --multihost)")
    return
  if jax.process_index() != 0:  # process 0 writes and prints the report
    return
  for table in outcome["results"]:
    cells = ", ".join(f"{column} " + "/".join(f"{values.get(m, float('nan')) * 100:.2f}"
                                              for m in table.metric_names)
                      for column, values in table.columns.items())
    print(f"{table.title} [{'/'.join(m.upper() for m in table.metric_names)}]: {cells}")
  counts = reports.status_counts(outcome["videos"])
  print("videos: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
  for label, speed in outcome["throughput"].items():
    print(f"throughput {label}: {speed['videos_per_second']:.2f} videos/s, "
          f"{speed['windows_per_second']:.1f} windows/s")
  print(f"report: {storage.path(FLAGS.output)}")


def define_flags() -> None:
  cli.define_compilation_cache_flag()
  flags.DEFINE_string("checkpoint", None,
                      "Fine-tuning or pretraining workdir, or an export directory; for "
                      "fakeavceleb_loo also CATEGORY=PATH,... (one model per held-out category).")
  flags.DEFINE_string("data", None, "CSV of videos, FakeAVCeleb directory, prepared shards, or "
                      "a folder of (unlabelled) videos.")
  flags.DEFINE_enum("protocol", "all", protocols.PROTOCOLS, "Evaluation protocol.")
  flags.DEFINE_string("output", None, "Directory for the report files (required except with "
                      "--windows_only).")
  flags.DEFINE_enum("scorer", "classifier", ["classifier", "coherence"],
                    "classifier: the checkpoint's detector (HAVIC: the fine-tuned heads); "
                    "coherence: audio-visual agreement of the "
                    "encoders (any checkpoint, no fine-tuning).")
  flags.DEFINE_integer("step", None, "Checkpoint step of a workdir (default: best, else latest).")
  flags.DEFINE_string("split", None, "Split of FakeAVCeleb / prepared data to score "
                      "(default: test).")
  flags.DEFINE_bool("no_audio", False, "Audio-missing mode: score every video with the video "
                    "head (videos without an audio track always are).")
  flags.DEFINE_float("max_seconds", windows.MAX_SECONDS, "Longest stretch of a video scored, s.")
  flags.DEFINE_integer("batch_size", 32, "Windows per device batch (global).", lower_bound=1)
  flags.DEFINE_integer("workers", 0, "Processes decoding videos and finding faces (0: this one).",
                       lower_bound=0)
  flags.DEFINE_integer("detect_every", 1, "Run the face detector on every k-th sampled frame "
                       "of a raw video (and its last) and interpolate the boxes in between: "
                       "about k times less detection time for crops that can lag a moving "
                       "face (1: every frame; BENCHMARKS.md has the speed and AUC for k = 2, "
                       "4). Prepared shards keep their stored crops.", lower_bound=1)
  flags.DEFINE_integer("limit", None, "Score at most this many videos per column (a quick look).")
  flags.DEFINE_integer("split_seed", sources.FAKEAVCELEB_SPLIT_SEED,
                       "Seed of FakeAVCeleb's 70/30 split (raw FakeAVCeleb directories).")
  flags.DEFINE_enum("split_by", "video", ["video", "identity"],
                    "FakeAVCeleb split drawn by video (the paper) or by identity.")
  flags.DEFINE_string("windows", "", "Directory of window shards: the videos are cut into "
                      "windows there first (resuming), then scored from them by every process "
                      "(--multihost) into --output/scores (resuming); see --windows_only.")
  flags.DEFINE_bool("windows_only", False, "Only cut the windows into --windows (on CPU "
                    "machines, or an Apache Beam pipeline with --runner=beam); score them "
                    "later with the same command without this flag.")
  flags.DEFINE_enum("runner", "local", window_shards.RUNNERS, "Who cuts the windows: local "
                    "(--workers processes) or beam (an Apache Beam pipeline, --beam_options).")
  flags.DEFINE_string("beam_options", "--runner=DirectRunner", "Apache Beam pipeline options "
                      "for --runner=beam, e.g. \"--runner=DataflowRunner --project=P "
                      "--region=R --temp_location=gs://B/tmp\".")
  flags.DEFINE_integer("videos_per_shard", 16, "Videos per window shard (a unit of resume and "
                       "of each process's share of the scoring).", lower_bound=1)
  flags.DEFINE_string("input_uri", "", "With --windows: where the workers that cut the "
                      "windows read the videos, a gs://BUCKET/DIR holding what the directory of "
                      "--data holds (Dataflow workers do not see this machine's files).")
  cli.define_distributed_flags()
  flags.mark_flags_as_required(["checkpoint", "data"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
