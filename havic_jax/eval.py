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

The pieces live in ``havic_jax.evaluation``: ``videos`` (what ``--data`` holds), ``inputs``
(window inputs, worker pool), ``per_video`` (video scores), ``protocols`` (columns and tables),
``reports`` (the files); this module holds the flags and :func:`run`.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from absl import app, flags
from jax.experimental import multihost_utils

from havic_jax import cli, detectors, sharding, storage
from havic_jax.checkpoints import loading, released
from havic_jax.checkpoints.loading import Checkpoint
from havic_jax.data import sources
from havic_jax.evaluation import (per_video, protocols, reports, shard_scoring,
                                  window_shards)
from havic_jax.evaluation.scoring import WindowScorer
from havic_jax.evaluation.videos import EvalData, EvalVideo, load_data
from havic_jax.media import reencode, windows

FLAGS = flags.FLAGS


def run(checkpoint: str, data_path: str, protocol: str, output: str, *, scorer: str = "classifier",
        step: Optional[int] = None, split: Optional[str] = None, no_audio: bool = False,
        max_seconds: float = windows.MAX_SECONDS, batch_size: int = 32, workers: int = 0,
        limit: Optional[int] = None, split_seed: int = sources.FAKEAVCELEB_SPLIT_SEED,
        split_by: str = "video", detect_every: int = 1, windows: str = "",
        windows_only: bool = False, runner: str = "local", beam_options: str = "",
        videos_per_shard: int = 16, input_uri: str = "") -> Dict[str, Any]:
  """Scores ``protocol`` on ``data_path`` with ``checkpoint``; writes the report to ``output``.
  ``detect_every``: the face detector runs on every k-th sampled frame of a raw video and its
  last, the boxes in between interpolated (1: every sampled frame).

  ``windows``: a directory of window shards (``evaluation.window_shards``): the videos are cut
  into windows there first (``runner`` "local" on ``workers`` processes, or "beam" with
  ``beam_options``; ``windows_only`` stops after that), then every process joined by
  ``jax.distributed`` scores its share of the shards on its own devices into ``output``
  (``evaluation.shard_scoring``, resumable) and process 0 writes the report.

  Returns {"results": [ProtocolResult], "videos": [VideoResult], "files": {name: path},
  "throughput": {...}} (empty on processes other than 0 and with ``windows_only``)."""
  if protocol not in protocols.PROTOCOLS:
    raise ValueError(f"--protocol must be one of {protocols.PROTOCOLS}, got {protocol!r}")
  classifier = scorer == "classifier"
  data = load_data(data_path, split_seed, split_by)
  columns = protocols.protocol_videos(protocol, data, split)
  if limit:
    columns = {name: videos[:limit] for name, videos in columns.items()}
  paths = protocols.parse_checkpoints(checkpoint)
  if protocol != "fakeavceleb_loo" and None not in paths:
    raise ValueError("CATEGORY=PATH checkpoints are for --protocol=fakeavceleb_loo only")
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.local_devices())
  loaded: Dict[str, Checkpoint] = {}
  scorers: Dict[str, WindowScorer] = {}
  for path in sorted(set(paths.values())):
    loaded[path] = loading.load(path, step=loading.BEST if step is None else step,
                                releases=tuple(released.HAVIC_SOURCES))
    scorers[path] = WindowScorer(loaded[path], mesh, batch_size, classifier)
  notes = [f"scorer: {scorer}" + ("" if classifier else
                                  " (score = (1 − audio-visual cosine) / 2; no threshold, so "
                                  "no ACC)")]
  if no_audio:
    notes.append("audio missing: every video scored with the video head")
  if protocol == "fakeavceleb_loo" and None in paths:
    notes.append("one checkpoint scored every category; leave-one-out numbers need one model "
                 "per held-out category (--checkpoint=RVFA=DIR,...)")

  groups: Dict[str, List[reports.VideoResult]] = {}
  throughput: Dict[str, Dict[str, float]] = {}
  conditions = [None] + (list(reencode.CONDITIONS) if protocol == "robustness" else [])
  cache: Dict[Tuple[str, str, Optional[str]], reports.VideoResult] = {}
  if windows:
    if len(scorers) > 1:
      raise ValueError("--windows scores with one checkpoint; score each CATEGORY=PATH "
                       "checkpoint of fakeavceleb_loo in a run of its own")
    path, window_scorer = next(iter(scorers.items()))
    options = window_shards.WindowOptions(window_scorer.cfg, max_seconds, no_audio,
                                          window_scorer.face_tracks, detect_every)
    merged, speed = windows_results(
        windows, data, columns, conditions, window_scorer, options, output, windows_only,
        runner=runner, beam_options=beam_options, videos_per_shard=videos_per_shard,
        workers=workers, input_uri=input_uri)
    if merged is None:
      return {"results": [], "videos": [], "files": {}, "throughput": {}}
    cache = {(path,) + key: result for key, result in merged.items()}
    throughput["windows"] = speed
  for name, videos in columns.items():
    for condition in conditions:
      path = paths.get(name if name in paths else None) or paths[None]
      todo = [v for v in videos if (path, v.video_id, condition) not in cache]
      label = name if condition is None else condition
      if todo:
        scored, speed = per_video.score_videos(todo, data, scorers[path], max_seconds, no_audio,
                                               workers, condition,
                                               description=f"scoring {label}",
                                               detect_every=detect_every)
        throughput[label] = speed
        for video, result in zip(todo, scored):
          cache[(path, video.video_id, condition)] = result
      column = protocols.CLEAN if protocol == "robustness" and condition is None else label
      groups[column] = [cache[(path, v.video_id, condition)] for v in videos]
  # Every result once, in the order the columns first name it.
  all_results = list({id(r): r for group in groups.values() for r in group}.values())
  generators = {v.video_id: v.generator for v in data.videos}
  method = pathlib.Path(next(iter(paths.values()))).name if len(paths) == 1 else "per-category"
  thresholded = classifier and all(detectors.DETECTORS[loaded[path].detector].thresholded
                                   for path in loaded)
  if classifier and not thresholded:
    notes.append("the detector's score has no decision threshold (unsupervised), so no ACC")
  tables = protocols.protocol_results(protocol, method, groups, generators, thresholded, notes)
  meta = {
      "protocol": protocol, "scorer": scorer, "no_audio": no_audio, "max_seconds": max_seconds,
      "detect_every": detect_every,
      "checkpoints": {str(k or "all"): loaded[p].description for k, p in paths.items()},
      "data": {"path": data.path, "kind": data.kind, "sha256": data.hash,
               "videos": sum(len(v) for v in columns.values())},
      "versions": reports.versions(),
      "devices": f"{jax.device_count()} × {jax.devices()[0].device_kind}",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "throughput": throughput,
  }
  files = reports.write_report(output, tables, all_results, meta)
  return {"results": tables, "videos": all_results, "files": files, "throughput": throughput}


def windows_results(windows: str, data: EvalData, columns: Mapping[str, Sequence[EvalVideo]],
                    conditions: Sequence[Optional[str]], scorer: WindowScorer,
                    options: window_shards.WindowOptions, output: str, windows_only: bool, *,
                    runner: str, beam_options: str, videos_per_shard: int, workers: int,
                    input_uri: str = "") -> Tuple[Optional[Dict[Tuple[str, Optional[str]], reports.VideoResult]],
                               Dict[str, float]]:
  """The results of every (video, condition) of ``columns`` × ``conditions`` scored from the
  window shards in ``windows``: cuts them first where ``windows_only`` asks, or where a single
  process finds them unfinished; this process scores its share; after every process has,
  process 0 merges them all. Returns (results, this process's throughput); results None with
  ``windows_only`` and on processes other than 0. ``input_uri``: where the window workers read
  the videos (``gs://BUCKET/DIR`` holding what the directory of ``data`` holds)."""
  if data.kind == "prepared":
    raise ValueError("--windows cuts raw videos; prepared shards are windows already: score "
                     "them without --windows")
  tasks = list({(v.video_id, c): window_shards.Task(v.video_id, v.path, c)
                for videos in columns.values() for c in conditions for v in videos}.values())
  if input_uri:
    root = data.path if os.path.isdir(data.path) else os.path.dirname(os.path.abspath(data.path))
    tasks = window_shards.rebased(tasks, root, input_uri)
  described = {"path": data.path, "kind": data.kind, "sha256": data.hash}
  if windows_only or jax.process_count() == 1:
    manifest = window_shards.write_windows(windows, tasks, options, described,
                                           videos_per_shard, runner, beam_options, workers)
    if windows_only:
      return None, {}
  manifest = window_shards.open_windows(windows, options, described)
  speed = shard_scoring.score_shards(windows, manifest, scorer,
                                     {v.video_id: v for v in data.videos}, output,
                                     jax.process_index(), jax.process_count())
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("havic_jax.eval: every shard scored")
  if jax.process_index() != 0:
    return None, speed
  return shard_scoring.merged_results(output, manifest), speed


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
  outcome = run(FLAGS.checkpoint, FLAGS.data, FLAGS.protocol, FLAGS.output, scorer=FLAGS.scorer,
                step=FLAGS.step, split=FLAGS.split, no_audio=FLAGS.no_audio,
                max_seconds=FLAGS.max_seconds, batch_size=FLAGS.batch_size,
                workers=FLAGS.workers, limit=FLAGS.limit, split_seed=FLAGS.split_seed,
                split_by=FLAGS.split_by, detect_every=FLAGS.detect_every,
                windows=FLAGS.windows, windows_only=FLAGS.windows_only, runner=FLAGS.runner,
                beam_options=FLAGS.beam_options, videos_per_shard=FLAGS.videos_per_shard,
                input_uri=FLAGS.input_uri)
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
