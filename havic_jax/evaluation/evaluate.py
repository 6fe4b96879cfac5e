"""One evaluation as a library call: :class:`EvalOptions` and :func:`run`, which scores a
protocol on the videos of ``data`` with one checkpoint (or one per held-out category) and writes
the report; the eval binary (``python -m havic_jax.eval``) turns its flags into the options.

The steps: the checkpoints and their window scorers on this machine's devices
(:func:`load_scorers`), the window shards at scale (:func:`windows_results`), the videos of each
column scored once per condition (:func:`score_columns`), and the tables and report files
(:func:`write_results`)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
from jax.experimental import multihost_utils

from havic_jax import detectors, sharding
from havic_jax.checkpoints import loading, released
from havic_jax.checkpoints.loading import Checkpoint
from havic_jax.data import sources
from havic_jax.evaluation import per_video, protocols, reports, shard_scoring, window_shards
from havic_jax.evaluation.scoring import WindowScorer
from havic_jax.evaluation.videos import EvalData, EvalVideo, load_data
from havic_jax.media import reencode
from havic_jax.media.windows import MAX_SECONDS

# (checkpoint path, video id, condition) -> the video's result; condition None: as stored.
ResultKey = Tuple[str, str, Optional[str]]


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What an evaluation scores and how (the eval binary's flags of the same names).

  protocol: one of ``protocols.PROTOCOLS``: ``all`` (every labelled video),
    ``fakeavceleb_intra``, ``fakeavceleb_loo`` (the one protocol that takes CATEGORY=PATH
    checkpoints), ``kodf``, ``hifi_avdf`` or ``robustness`` (every video also re-encoded).
  output: directory (local or ``gs://``) of the report files and, with ``windows``, of the
    shards' scores (``OUTPUT/scores``); required except with ``windows_only``.
  scorer: ``classifier`` (the checkpoint's detector) or ``coherence`` (audio-visual
    disagreement of the encoders, ``(1 − cos) / 2``: any checkpoint, no threshold, no ACC).
  step: checkpoint step of a workdir (None: the best by validation AUC, else the latest).
  split: split of FakeAVCeleb or prepared data to score (None: test).
  no_audio: audio-missing mode: every video scored with the video head.
  max_seconds: longest stretch of a raw video cut into windows, seconds.
  batch_size: windows per device batch (global, across this process's devices).
  workers: processes decoding videos and finding faces (0: this one); with ``windows`` and
    the local runner, the processes cutting the window shards.
  limit: at most this many videos scored per column (None: all; a quick look).
  split_seed: seed of FakeAVCeleb's 70/30 split (raw FakeAVCeleb directories).
  split_by: FakeAVCeleb split drawn by ``video`` (the paper) or by ``identity``.
  detect_every: the face detector runs on every k-th sampled frame of a raw video and its last,
    the boxes in between interpolated (1: every sampled frame); prepared shards keep their crops.
  windows: directory of window shards (``evaluation.window_shards``; "": none): the videos are
    cut into windows there first, then every process joined by ``jax.distributed`` scores its
    share of the shards (``evaluation.shard_scoring``, resumable) and process 0 writes the
    report.
  windows_only: only cut the window shards into ``windows`` (no scores, no report).
  runner: who cuts the window shards: ``local`` (``workers`` processes) or ``beam`` (an Apache
    Beam pipeline with ``beam_options``).
  beam_options: Apache Beam pipeline options for ``runner="beam"``, one string.
  videos_per_shard: videos per window shard (a unit of resume and of each process's share).
  input_uri: with ``windows``: where the workers that cut the windows read the videos, a
    ``gs://BUCKET/DIR`` holding what the directory of ``data`` holds ("": where ``data`` says).
  """

  protocol: str = "all"
  output: str = ""
  scorer: str = "classifier"
  step: Optional[int] = None
  split: Optional[str] = None
  no_audio: bool = False
  max_seconds: float = MAX_SECONDS
  batch_size: int = 32
  workers: int = 0
  limit: Optional[int] = None
  split_seed: int = sources.FAKEAVCELEB_SPLIT_SEED
  split_by: str = "video"
  detect_every: int = 1
  windows: str = ""
  windows_only: bool = False
  runner: str = "local"
  beam_options: str = ""
  videos_per_shard: int = 16
  input_uri: str = ""

  @property
  def classifier(self) -> bool:
    """Whether the checkpoint's detector scores (else the encoders' coherence)."""
    return self.scorer == "classifier"


def run(checkpoint: str, data: str, options: EvalOptions) -> Dict[str, Any]:
  """Scores ``options.protocol`` on ``data`` (a CSV of videos, a FakeAVCeleb directory, a folder
  of videos or prepared shards) with ``checkpoint`` (a workdir or export, or
  ``CATEGORY=PATH,...`` for ``fakeavceleb_loo``); writes the report to ``options.output``.

  Returns {"results": [ProtocolResult], "videos": [VideoResult], "files": {name: path},
  "throughput": {...}} (empty on processes other than 0 and with ``windows_only``)."""
  if options.protocol not in protocols.PROTOCOLS:
    raise ValueError(f"--protocol must be one of {protocols.PROTOCOLS}, "
                     f"got {options.protocol!r}")
  if not (options.output or options.windows_only):
    raise ValueError("an output directory is required (except with windows_only)")
  eval_data = load_data(data, options.split_seed, options.split_by)
  columns = protocols.protocol_videos(options.protocol, eval_data, options.split)
  if options.limit:
    columns = {name: videos[:options.limit] for name, videos in columns.items()}
  paths = protocols.parse_checkpoints(checkpoint)
  if options.protocol != "fakeavceleb_loo" and None not in paths:
    raise ValueError("CATEGORY=PATH checkpoints are for --protocol=fakeavceleb_loo only")
  loaded, scorers = load_scorers(paths, options)
  conditions = [None] + (list(reencode.CONDITIONS) if options.protocol == "robustness" else [])
  cache: Dict[ResultKey, reports.VideoResult] = {}
  throughput: Dict[str, Dict[str, float]] = {}
  if options.windows:
    if len(scorers) > 1:
      raise ValueError("--windows scores with one checkpoint; score each CATEGORY=PATH "
                       "checkpoint of fakeavceleb_loo in a run of its own")
    path, scorer = next(iter(scorers.items()))
    merged, speed = windows_results(eval_data, columns, conditions, scorer, options)
    if merged is None:
      return {"results": [], "videos": [], "files": {}, "throughput": {}}
    cache = {(path,) + key: result for key, result in merged.items()}
    throughput["windows"] = speed
  groups = score_columns(columns, conditions, paths, scorers, eval_data, options, cache,
                         throughput)
  return write_results(groups, columns, paths, loaded, eval_data, options, throughput)


def load_scorers(paths: Mapping[Optional[str], str], options: EvalOptions
                 ) -> Tuple[Dict[str, Checkpoint], Dict[str, WindowScorer]]:
  """Each distinct checkpoint of ``paths`` loaded (``options.step``, else the best) and its
  window scorer on a data-parallel mesh of this process's devices, by path."""
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.local_devices())
  loaded: Dict[str, Checkpoint] = {}
  scorers: Dict[str, WindowScorer] = {}
  for path in sorted(set(paths.values())):
    loaded[path] = loading.load(path, step=loading.BEST if options.step is None else options.step,
                                releases=tuple(released.HAVIC_SOURCES))
    scorers[path] = WindowScorer(loaded[path], mesh, options.batch_size, options.classifier)
  return loaded, scorers


def score_columns(columns: Mapping[str, Sequence[EvalVideo]], conditions: Sequence[Optional[str]],
                  paths: Mapping[Optional[str], str], scorers: Mapping[str, WindowScorer],
                  data: EvalData, options: EvalOptions,
                  cache: Dict[ResultKey, reports.VideoResult],
                  throughput: Dict[str, Dict[str, float]]
                  ) -> Dict[str, List[reports.VideoResult]]:
  """The results of each column's videos under each condition, by column (``robustness``: the
  clean column is ``protocols.CLEAN``). Scores what ``cache`` lacks with the column's
  checkpoint (its category's, else the one for all), adds it to ``cache`` and the speed of each
  scoring to ``throughput``; a video in several columns is scored once."""
  groups: Dict[str, List[reports.VideoResult]] = {}
  for name, videos in columns.items():
    for condition in conditions:
      path = paths.get(name if name in paths else None) or paths[None]
      todo = [v for v in videos if (path, v.video_id, condition) not in cache]
      label = name if condition is None else condition
      if todo:
        scored, speed = per_video.score_videos(todo, data, scorers[path], options.max_seconds,
                                               options.no_audio, options.workers, condition,
                                               description=f"scoring {label}",
                                               detect_every=options.detect_every)
        throughput[label] = speed
        for video, result in zip(todo, scored):
          cache[(path, video.video_id, condition)] = result
      clean = options.protocol == "robustness" and condition is None
      groups[protocols.CLEAN if clean else label] = [cache[(path, v.video_id, condition)]
                                                    for v in videos]
  return groups


def run_notes(options: EvalOptions, paths: Mapping[Optional[str], str]) -> List[str]:
  """The report's notes on how it was scored: the scorer, the audio-missing mode, and one
  checkpoint for every category of a leave-one-out protocol."""
  notes = [f"scorer: {options.scorer}" + ("" if options.classifier else
                                          " (score = (1 − audio-visual cosine) / 2; no "
                                          "threshold, so no ACC)")]
  if options.no_audio:
    notes.append("audio missing: every video scored with the video head")
  if options.protocol == "fakeavceleb_loo" and None in paths:
    notes.append("one checkpoint scored every category; leave-one-out numbers need one model "
                 "per held-out category (--checkpoint=RVFA=DIR,...)")
  return notes


def write_results(groups: Mapping[str, List[reports.VideoResult]],
                  columns: Mapping[str, Sequence[EvalVideo]], paths: Mapping[Optional[str], str],
                  loaded: Mapping[str, Checkpoint], data: EvalData, options: EvalOptions,
                  throughput: Dict[str, Dict[str, float]]) -> Dict[str, Any]:
  """The protocol's tables of ``groups`` and the report files in ``options.output``; returns
  :func:`run`'s outcome."""
  # Every result once, in the order the columns first name it.
  all_results = list({id(r): r for group in groups.values() for r in group}.values())
  generators = {v.video_id: v.generator for v in data.videos}
  method = pathlib.Path(next(iter(paths.values()))).name if len(paths) == 1 else "per-category"
  thresholded = options.classifier and all(
      detectors.DETECTORS[loaded[path].detector].thresholded for path in loaded)
  notes = run_notes(options, paths)
  if options.classifier and not thresholded:
    notes.append("the detector's score has no decision threshold (unsupervised), so no ACC")
  tables = protocols.protocol_results(options.protocol, method, groups, generators, thresholded,
                                      notes)
  meta = {
      "protocol": options.protocol, "scorer": options.scorer, "no_audio": options.no_audio,
      "max_seconds": options.max_seconds, "detect_every": options.detect_every,
      "checkpoints": {str(k or "all"): loaded[p].description for k, p in paths.items()},
      "data": {"path": data.path, "kind": data.kind, "sha256": data.hash,
               "videos": sum(len(v) for v in columns.values())},
      "versions": reports.versions(),
      "devices": f"{jax.device_count()} × {jax.devices()[0].device_kind}",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "throughput": throughput,
  }
  files = reports.write_report(options.output, tables, all_results, meta)
  return {"results": tables, "videos": all_results, "files": files, "throughput": throughput}


def windows_results(data: EvalData, columns: Mapping[str, Sequence[EvalVideo]],
                    conditions: Sequence[Optional[str]], scorer: WindowScorer,
                    options: EvalOptions
                    ) -> Tuple[Optional[Dict[Tuple[str, Optional[str]], reports.VideoResult]],
                               Dict[str, float]]:
  """The results of every (video, condition) of ``columns`` × ``conditions`` scored from the
  window shards in ``options.windows``: cuts them first where ``windows_only`` asks, or where a
  single process finds them unfinished; this process scores its share into ``options.output``;
  after every process has, process 0 merges them all. Returns (results, this process's
  throughput); results None with ``windows_only`` and on processes other than 0."""
  if data.kind == "prepared":
    raise ValueError("--windows cuts raw videos; prepared shards are windows already: score "
                     "them without --windows")
  window_options = window_shards.WindowOptions(scorer.model_config, options.max_seconds,
                                               options.no_audio, scorer.face_tracks,
                                               options.detect_every)
  tasks = list({(v.video_id, c): window_shards.Task(v.video_id, v.path, c)
                for videos in columns.values() for c in conditions for v in videos}.values())
  if options.input_uri:
    root = data.path if os.path.isdir(data.path) else os.path.dirname(os.path.abspath(data.path))
    tasks = window_shards.rebased(tasks, root, options.input_uri)
  described = {"path": data.path, "kind": data.kind, "sha256": data.hash}
  if options.windows_only or jax.process_count() == 1:
    window_shards.write_windows(options.windows, tasks, window_options, described,
                                options.videos_per_shard, options.runner, options.beam_options,
                                options.workers)
    if options.windows_only:
      return None, {}
  manifest = window_shards.open_windows(options.windows, window_options, described)
  speed = shard_scoring.score_shards(options.windows, manifest, scorer,
                                     {v.video_id: v for v in data.videos}, options.output,
                                     jax.process_index(), jax.process_count())
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("havic_jax.eval: every shard scored")
  if jax.process_index() != 0:
    return None, speed
  return shard_scoring.merged_results(options.output, manifest), speed
