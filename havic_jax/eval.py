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
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import multiprocessing
import pathlib
import tempfile
import time
import traceback
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence
from typing import Tuple

import jax
import numpy as np
import tqdm
from absl import app, flags

from havic_jax import cli, detectors
from havic_jax.data import sources, input_pipeline, records
from havic_jax.evaluation import metrics, reports
from havic_jax import sharding, storage
from havic_jax.detectors import fakeout
from havic_jax.media import decode, fbank, reencode, tracking, windows
from havic_jax.media.faces import mtcnn_detector, mtcnn_multi_detector
from havic_jax.models.config import ModelConfig
from havic_jax.evaluation.scoring import Checkpoint, WindowScorer, load_checkpoint

FLAGS = flags.FLAGS
PROTOCOLS = ("all", "fakeavceleb_intra", "fakeavceleb_loo", "kodf", "hifi_avdf", "robustness")
TITLES = {
    "all": "All labelled videos",
    "fakeavceleb_intra": "FakeAVCeleb intra-dataset (70/30)",
    "fakeavceleb_loo": "FakeAVCeleb leave-one-category-out",
    "kodf": "KoDF cross-dataset",
    "hifi_avdf": "HiFi-AVDF cross-dataset (per generator)",
    "robustness": "Robustness to re-encoding",
    "categories": "Per fake category (each against all real videos)",
}
AVERAGE = "AVG"
ALL = "all"
CLEAN = "clean"  # the robustness protocol's column of the videos as they are
REAL = "real"
LEAST_COHERENT = 3  # windows listed per video as the likely manipulated moments
PREPARED_STATUS = {"unreadable": "unreadable", "error": "error"}  # other reasons: "rejected"


@dataclasses.dataclass(frozen=True)
class EvalVideo:
  """One video to score. label: 1 fake, 0 real, None unknown; category: "real", a fake
  category or "fake"; generator: the manipulation method or generator ("" unknown); records:
  (first record, clips) in prepared data; rejected: why preparation rejected it ("" if not)."""

  video_id: str
  path: str
  label: Optional[int]
  category: str
  generator: str
  splits: Tuple[str, ...]
  records: Optional[Tuple[int, int]] = None
  rejected: str = ""


@dataclasses.dataclass(frozen=True)
class EvalData:
  """The videos of ``--data``: kind "csv", "fakeavceleb" or "prepared"; hash: sha256 over the
  video list (id, label, size) or the manifest."""

  kind: str
  path: str
  videos: Tuple[EvalVideo, ...]
  hash: str
  prepared: Optional[input_pipeline.PreparedData] = None


@dataclasses.dataclass
class WindowInputs:
  """A video's model inputs, or why it has none. video uint8 [n, 16, S, S, 3]; audio float32
  [n, audio_frames, mel_bins]; starts [n] s; head: the logit scored ("overall" or "video");
  tracks: [n] face track of each window (face-track scoring), else None."""

  status: str
  detail: str = ""
  video: Optional[np.ndarray] = None
  audio: Optional[np.ndarray] = None
  starts: Optional[np.ndarray] = None
  head: str = "overall"
  tracks: Optional[np.ndarray] = None


def _entry_video(entry: sources.VideoEntry) -> EvalVideo:
  return EvalVideo(entry.video_id, entry.path, entry.overall_label, entry.category,
                   entry.method, entry.splits)


def _sha256(lines: Iterable[str]) -> str:
  digest = hashlib.sha256()
  for line in lines:
    digest.update(line.encode() + b"\n")
  return digest.hexdigest()


def _file_size(path: str) -> int:
  try:
    return pathlib.Path(path).stat().st_size
  except OSError:
    return -1


def load_data(path: str, split_seed: int = sources.FAKEAVCELEB_SPLIT_SEED,
              split_by: str = "video") -> EvalData:
  """The videos of a CSV, a FakeAVCeleb directory or a prepared-shards directory (local paths:
  the decoders read files)."""
  location = pathlib.Path(storage.local_only(path, "--data"))
  if location.is_dir() and (location / input_pipeline.MANIFEST).is_file():
    prepared = input_pipeline.open_prepared(path)
    manifest = prepared.manifest
    member = {}
    for split, ids in manifest["splits"].items():
      for video_id in ids:
        member.setdefault(video_id, []).append(split)
    source = pathlib.Path(manifest.get("source", ""))
    videos = [EvalVideo(v["video_id"], v.get("path") or str(source / v["video_id"]),
                        v["overall_label"],
                        v["category"], v.get("method", ""), tuple(member.get(v["video_id"], ())),
                        (v["first_record"], v["clips"])) for v in manifest["videos"]]
    videos += [EvalVideo(r["video_id"], r["path"], None, "", "", (), None,
                         f"{r['reason']}: {r.get('message', '')}")
               for r in manifest["rejected"]]
    digest = hashlib.sha256((location / input_pipeline.MANIFEST).read_bytes()).hexdigest()
    return EvalData("prepared", str(location.absolute()), tuple(videos), digest, prepared)
  if location.is_file():
    videos, kind = tuple(_entry_video(e) for e in sources.read_csv(path)), "csv"
  elif sources.fakeavceleb_meta(path) is not None:
    videos = tuple(_entry_video(e) for e in sources.read_fakeavceleb(path, split_seed,
                                                                      split_by))
    kind = "fakeavceleb"
  elif location.is_dir():  # any folder of videos, unlabelled: scores and statuses only
    videos = tuple(EvalVideo(p.relative_to(location).as_posix(), str(p), None, "", "", ("all",))
                   for p in sources.videos_under(location))
    kind = "csv"
    if not videos:
      raise sources.DatasetError(f"{path}: no videos ({', '.join(sources.VIDEO_SUFFIXES)}), "
                                  f"meta_data.csv or manifest.json in this directory")
  else:
    raise sources.DatasetError(f"{path}: no such file or directory; --data takes a CSV, a "
                                f"FakeAVCeleb directory, prepared shards or a folder of videos")
  digest = _sha256(f"{v.video_id}\t{v.label}\t{_file_size(v.path)}" for v in videos)
  return EvalData(kind, str(location.absolute()), videos, digest)


# ----------------------------------------------------------------------------------------------
# Window inputs of one video (runs in worker processes for raw files).
# ----------------------------------------------------------------------------------------------
_WORKER: Dict[str, Any] = {}


def _init_worker() -> None:
  _WORKER["detect"] = mtcnn_detector()


def _track_windows(media: Any, plan: windows.WindowPlan, size: int
                   ) -> Optional[List[np.ndarray]]:
  """Per face track (two or more people on screen), the uint8 [n, 16, size, size, 3] windows of
  its crops; None when at most one face track is found."""
  if "detect_all" not in _WORKER:
    _WORKER["detect_all"] = mtcnn_multi_detector()
  frames = media.frames[plan.frame_indices]
  tracks = tracking.detect_tracks(frames, _WORKER["detect_all"])
  if len(tracks) < 2:
    return None
  per_track = []
  for track in tracks:
    crops = tracking.track_crops(frames, track, size)
    if plan.padded:
      crops = crops[plan.window_frames[0]]
    per_track.append(crops[plan.window_frames])
  return per_track


def _video_inputs(task: Tuple[str, ModelConfig, float, bool, Optional[str], bool]
                  ) -> WindowInputs:
  """Decodes, re-encodes (robustness), cuts and featurises one raw video; never raises."""
  path, cfg, max_seconds, no_audio, condition, face_tracks = task
  try:
    if condition is not None:
      with tempfile.TemporaryDirectory() as scratch:
        copy = pathlib.Path(scratch) / "reencoded.mp4"
        reencode.reencode(path, copy, reencode.CONDITIONS[condition])
        media = decode.read_media(copy)
    else:
      media = decode.read_media(path)
  except decode.MediaError as error:
    return WindowInputs("unreadable", str(error))
  try:
    cut = windows.extract_windows(media, _WORKER["detect"], max_seconds)
    crops = input_pipeline.resize_frames(cut.crops, cfg.image_size)  # once: windows overlap
    video = crops[cut.plan.window_frames]
    status, head = cut.status, "overall"
    if cut.audio is None or no_audio:
      audio = np.zeros((len(video), cfg.audio_frames, cfg.mel_bins), np.float32)
      head = "video"
      if cut.audio is None:
        status = "no_audio"
    else:
      audio = np.stack([fbank.audio_features(wave, cfg.audio_frames, cfg.mel_bins)
                        for wave in cut.audio])
    detail = (f"a face in {int(cut.faces_detected.sum())} of {len(cut.faces_detected)} sampled "
              f"frames" if status in ("partial_face", "no_face") else "")
    starts, tracks = cut.plan.starts.astype(np.float64), None
    per_track = _track_windows(media, cut.plan, cfg.image_size) if face_tracks else None
    if per_track is not None:
      detail = f"{len(per_track)} face tracks; {detail}".rstrip("; ")
      tracks = np.repeat(np.arange(len(per_track)), len(video))
      video = np.concatenate(per_track)
      audio, starts = np.tile(audio, (len(per_track), 1, 1)), np.tile(starts, len(per_track))
    return WindowInputs(status, detail, video, audio, starts, head, tracks)
  except Exception as error:  # pylint: disable=broad-except
    # One bad file must never stop a benchmark run: report it and go on.
    return WindowInputs("error", f"{type(error).__name__}: {error} "
                        f"{traceback.format_exc(limit=3)!r}")


def _prepared_inputs(video: EvalVideo, source: Any, transform: input_pipeline.ClipTransform,
                     no_audio: bool) -> WindowInputs:
  """The stored clips of a prepared video, one window each (starts from the clip records)."""
  if video.rejected:
    reason = video.rejected.split(":")[0]
    return WindowInputs(PREPARED_STATUS.get(reason, "rejected"),
                        f"rejected when prepared: {video.rejected}")
  first, count = video.records
  clips = [records.decode(source[first + i]) for i in range(count)]
  examples = [transform(clip, None) for clip in clips]
  starts = np.array([clip.clip_start for clip in clips], np.float64)
  audio = np.stack([e["audio"] for e in examples])
  if no_audio:
    audio = np.zeros_like(audio)
  return WindowInputs("ok", "", np.stack([e["video"] for e in examples]), audio, starts,
                      "video" if no_audio else "overall")


def window_inputs(videos: Sequence[EvalVideo], data: EvalData, cfg: ModelConfig,
                  max_seconds: float, no_audio: bool, condition: Optional[str], workers: int,
                  face_tracks: bool = False) -> Iterator[WindowInputs]:
  """Window inputs of ``videos`` in order; raw files are decoded on ``workers`` processes (0:
  in this process). ``face_tracks``: windows of every face track when several people are on
  screen (raw videos only; prepared clips hold one face)."""
  if data.kind == "prepared":
    if condition is not None:
      raise ValueError("the robustness protocol re-encodes video files; give --data the raw "
                       "videos (a CSV or a FakeAVCeleb directory), not prepared shards")
    transform = input_pipeline.ClipTransform(cfg, "eval")
    source = data.prepared.source()
    for video in videos:
      yield _prepared_inputs(video, source, transform, no_audio)
    return
  tasks = [(v.path, cfg, max_seconds, no_audio, condition, face_tracks) for v in videos]
  if workers <= 0:
    _init_worker()
    yield from map(_video_inputs, tasks)
    return
  with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
    yield from pool.imap(_video_inputs, tasks)


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def video_result(video: EvalVideo, inputs: WindowInputs, outputs: Optional[Mapping[str, Any]],
                 classifier: bool, id_suffix: str = "") -> reports.VideoResult:
  """A video's report entry from its window outputs (None: not scored).

  Classifier: window score sigmoid(logit of ``inputs.head``, or of ``overall`` for detectors
  without that head); video score sigmoid(mean logit), or with face tracks sigmoid(max over
  tracks of the mean of up to 9 uniformly spaced windows) (``fakeout.video_logit``).
  Coherence: window score (1 − mean segment cosine) / 2, video score the mean of those. The
  LEAST_COHERENT windows with the lowest coherence are listed when the scorer gives one."""
  common = dict(video_id=video.video_id + id_suffix, path=video.path, label=video.label,
                category=video.category, status=inputs.status, detail=inputs.detail)
  if outputs is None:
    return reports.VideoResult(score=float("nan"), num_windows=0, window_starts=[],
                               window_scores=[], least_coherent=[], **common)
  if classifier:
    logits = np.asarray(outputs.get(inputs.head, outputs["overall"]), np.float64)
    window_scores = _sigmoid(logits)
    if inputs.tracks is not None:
      score = float(_sigmoid(fakeout.video_logit(logits, inputs.tracks)))
    else:
      score = float(_sigmoid(logits.mean()))
  else:
    window_scores = (1.0 - np.asarray(outputs["coherence"], np.float64).mean(axis=1)) / 2.0
    score = float(window_scores.mean())
  least = []
  if "coherence" in outputs:
    window_coherence = np.asarray(outputs["coherence"], np.float64).mean(axis=1)
    least = sorted(inputs.starts[np.argsort(window_coherence, kind="stable")[:LEAST_COHERENT]]
                   .tolist())
  return reports.VideoResult(score=score, num_windows=len(window_scores),
                             window_starts=inputs.starts.tolist(),
                             window_scores=window_scores.tolist(), least_coherent=least,
                             **common)


def score_videos(videos: Sequence[EvalVideo], data: EvalData, scorer: WindowScorer,
                 max_seconds: float, no_audio: bool, workers: int,
                 condition: Optional[str] = None, description: str = "scoring"
                 ) -> Tuple[List[reports.VideoResult], Dict[str, float]]:
  """Scores ``videos``; returns their report entries and throughput (videos/s, windows/s)."""
  started = time.perf_counter()
  inputs_of: Dict[int, WindowInputs] = {}

  def items():
    face_tracks = (scorer.classifier
                   and detectors.DETECTORS[scorer.detector].face_tracks)
    for index, inputs in enumerate(window_inputs(videos, data, scorer.cfg, max_seconds, no_audio,
                                                 condition, workers, face_tracks)):
      inputs_of[index] = inputs
      yield index, inputs.video, inputs.audio

  suffix = "" if condition is None else f"@{condition}"
  results, num_windows = [], 0
  bar = tqdm.tqdm(total=len(videos), desc=description, unit="video")
  for index, outputs in scorer.score_stream(items()):
    inputs = inputs_of.pop(index)
    results.append(video_result(videos[index], inputs, outputs, scorer.classifier, suffix))
    num_windows += results[-1].num_windows
    bar.update(1)
  bar.close()
  seconds = time.perf_counter() - started
  return results, {"videos": len(videos), "windows": num_windows, "seconds": seconds,
                   "videos_per_second": len(videos) / max(seconds, 1e-9),
                   "windows_per_second": num_windows / max(seconds, 1e-9)}


# ----------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------
def protocol_videos(protocol: str, data: EvalData, split: Optional[str]
                    ) -> Dict[str, List[EvalVideo]]:
  """{column: videos} a protocol scores. FakeAVCeleb data defaults to its ``test`` split
  (leave-one-out: ``loo-C-test`` per category C); ``split`` overrides; a CSV scores all."""
  split = split or (None if data.kind == "csv" else "test")
  if protocol == "fakeavceleb_loo":
    if data.kind == "csv":
      raise sources.DatasetError("fakeavceleb_loo needs FakeAVCeleb splits: give --data a "
                                  "FakeAVCeleb directory or its prepared shards")
    return {c: [v for v in data.videos if f"loo-{c}-test" in v.splits]
            for c in sources.LEAVE_ONE_OUT_CATEGORIES}
  if protocol == "fakeavceleb_intra" and data.kind == "csv":
    raise sources.DatasetError("fakeavceleb_intra needs the FakeAVCeleb 70/30 split: give "
                                "--data a FakeAVCeleb directory or its prepared shards")
  if split is None:
    return {ALL: list(data.videos)}
  # Videos rejected at preparation have no split; they are listed with every split's report.
  chosen = [v for v in data.videos if split in v.splits or v.rejected]
  if not chosen:
    raise sources.DatasetError(f"{data.path}: no videos in split {split!r}")
  return {ALL: chosen}


def _labelled(results: Sequence[reports.VideoResult]) -> Tuple[np.ndarray, np.ndarray, List[str],
                                                                 List[str]]:
  kept = [r for r in results if r.scored and r.label is not None]
  return (np.array([r.score for r in kept]), np.array([r.label for r in kept]),
          [r.category for r in kept], [r.video_id for r in kept])


def _with_average(columns: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
  return {**columns, AVERAGE: metrics.average_metrics(columns)}


def protocol_results(protocol: str, method: str,
                     groups: Mapping[str, Sequence[reports.VideoResult]],
                     generators: Mapping[str, str], thresholded: bool, notes: Sequence[str]
                     ) -> List[reports.ProtocolResult]:
  """The tables of one protocol from its scored columns (``protocol_videos``)."""
  metric_names = ("acc", "auc", "ap") if thresholded else ("ap", "auc")
  curves = {}
  columns: Dict[str, Dict[str, float]] = {}
  for column, results in groups.items():
    scores, labels, _, _ = _labelled(results)
    columns[column] = metrics.binary_metrics(scores, labels)
    curves[column] = (scores, labels)
  if protocol == "fakeavceleb_loo":
    return [reports.ProtocolResult(protocol, TITLES[protocol], method, _with_average(columns),
                                   ("ap", "auc"), curves, notes)]
  tables = []
  if protocol != "hifi_avdf":
    tables.append(reports.ProtocolResult(protocol, TITLES[protocol], method, columns,
                                         metric_names, curves, notes))
  if protocol == "robustness":
    return tables
  scores, labels, categories, ids = _labelled(groups[ALL])
  if protocol == "hifi_avdf":
    categories = [REAL if label == 0 else generators.get(i) or "fake"
                  for label, i in zip(labels, ids)]
  per_group = metrics.group_metrics(scores, labels, categories, real_group=REAL,
                                    order=sources.LEAVE_ONE_OUT_CATEGORIES)
  if per_group and (len(per_group) > 1 or protocol == "hifi_avdf"):
    group_curves = {name: (np.concatenate([scores[labels == 0],
                                           scores[np.array(categories) == name]]),
                           np.concatenate([np.zeros(int((labels == 0).sum()), int),
                                           np.ones(int((np.array(categories) == name).sum()),
                                                   int)]))
                    for name in per_group}
    name = protocol if protocol == "hifi_avdf" else f"{protocol}_categories"
    title = TITLES[protocol] if protocol == "hifi_avdf" else TITLES["categories"]
    tables.append(reports.ProtocolResult(
        name, title, method,
        _with_average({k: {m: v[m] for m in ("ap", "auc")} for k, v in per_group.items()}),
        ("ap", "auc"), group_curves if protocol == "hifi_avdf" else {}, notes))
  return tables


def parse_checkpoints(value: str) -> Dict[Optional[str], str]:
  """``PATH`` -> {None: PATH}; ``RVFA=PATH1,FVRA-WL=PATH2`` -> {category: path}."""
  if "=" not in value:
    return {None: value}
  mapping = {}
  for part in value.split(","):
    category, _, path = part.partition("=")
    if category not in sources.LEAVE_ONE_OUT_CATEGORIES or not path:
      raise ValueError(f"--checkpoint: {part!r} is not CATEGORY=PATH with CATEGORY one of "
                       f"{sources.LEAVE_ONE_OUT_CATEGORIES}")
    mapping[category] = path
  return mapping


def versions() -> Dict[str, str]:
  """Versions of havic_jax and the libraries that shape the numbers."""
  import importlib.metadata
  out = {}
  for package in ("havic_jax", "jax", "flax", "numpy", "scikit-learn", "av"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = "unknown"
  return out


def run(checkpoint: str, data_path: str, protocol: str, output: str, *, scorer: str = "classifier",
        step: Optional[int] = None, split: Optional[str] = None, no_audio: bool = False,
        max_seconds: float = windows.MAX_SECONDS, batch_size: int = 32, workers: int = 0,
        limit: Optional[int] = None, split_seed: int = sources.FAKEAVCELEB_SPLIT_SEED,
        split_by: str = "video") -> Dict[str, Any]:
  """Scores ``protocol`` on ``data_path`` with ``checkpoint``; writes the report to ``output``.

  Returns {"results": [ProtocolResult], "videos": [VideoResult], "files": {name: path},
  "throughput": {...}}."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
  classifier = scorer == "classifier"
  data = load_data(data_path, split_seed, split_by)
  columns = protocol_videos(protocol, data, split)
  if limit:
    columns = {name: videos[:limit] for name, videos in columns.items()}
  paths = parse_checkpoints(checkpoint)
  if protocol != "fakeavceleb_loo" and None not in paths:
    raise ValueError("CATEGORY=PATH checkpoints are for --protocol=fakeavceleb_loo only")
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  loaded: Dict[str, Checkpoint] = {}
  scorers: Dict[str, WindowScorer] = {}
  for path in sorted(set(paths.values())):
    loaded[path] = load_checkpoint(path, step)
    scorers[path] = WindowScorer(loaded[path], mesh, batch_size, classifier)
  notes = [f"scorer: {scorer}" + ("" if classifier else
                                  " (score = (1 − audio-visual cosine) / 2; no threshold, so "
                                  "no ACC)")]
  if no_audio:
    notes.append("audio missing: every video scored with the video head")
  if protocol == "fakeavceleb_loo" and None in paths:
    notes.append("one checkpoint scored every category; leave-one-out numbers need one model "
                 "per held-out category (--checkpoint=RVFA=DIR,...)")

  all_results: List[reports.VideoResult] = []
  groups: Dict[str, List[reports.VideoResult]] = {}
  throughput: Dict[str, Dict[str, float]] = {}
  conditions = [None] + (list(reencode.CONDITIONS) if protocol == "robustness" else [])
  cache: Dict[Tuple[str, str, Optional[str]], reports.VideoResult] = {}
  for name, videos in columns.items():
    for condition in conditions:
      path = paths.get(name if name in paths else None) or paths[None]
      todo = [v for v in videos if (path, v.video_id, condition) not in cache]
      label = name if condition is None else condition
      scored, speed = score_videos(todo, data, scorers[path], max_seconds, no_audio, workers,
                                   condition, description=f"scoring {label}")
      throughput[label] = speed
      for video, result in zip(todo, scored):
        cache[(path, video.video_id, condition)] = result
        all_results.append(result)
      column = CLEAN if protocol == "robustness" and condition is None else label
      groups[column] = [cache[(path, v.video_id, condition)] for v in videos]
  generators = {v.video_id: v.generator for v in data.videos}
  method = pathlib.Path(next(iter(paths.values()))).name if len(paths) == 1 else "per-category"
  thresholded = classifier and all(detectors.DETECTORS[loaded[path].detector].thresholded
                                   for path in loaded)
  if classifier and not thresholded:
    notes.append("the detector's score has no decision threshold (unsupervised), so no ACC")
  tables = protocol_results(protocol, method, groups, generators, thresholded, notes)
  meta = {
      "protocol": protocol, "scorer": scorer, "no_audio": no_audio, "max_seconds": max_seconds,
      "checkpoints": {str(k or "all"): loaded[p].description for k, p in paths.items()},
      "data": {"path": data.path, "kind": data.kind, "sha256": data.hash,
               "videos": sum(len(v) for v in columns.values())},
      "versions": versions(), "devices": f"{jax.device_count()} × {jax.devices()[0].device_kind}",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "throughput": throughput,
  }
  files = reports.write_report(output, tables, all_results, meta)
  return {"results": tables, "videos": all_results, "files": files, "throughput": throughput}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  outcome = run(FLAGS.checkpoint, FLAGS.data, FLAGS.protocol, FLAGS.output, scorer=FLAGS.scorer,
                step=FLAGS.step, split=FLAGS.split, no_audio=FLAGS.no_audio,
                max_seconds=FLAGS.max_seconds, batch_size=FLAGS.batch_size,
                workers=FLAGS.workers, limit=FLAGS.limit, split_seed=FLAGS.split_seed,
                split_by=FLAGS.split_by)
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
  flags.DEFINE_string("checkpoint", None,
                      "Fine-tuning or pretraining workdir, or an export directory; for "
                      "fakeavceleb_loo also CATEGORY=PATH,... (one model per held-out category).")
  flags.DEFINE_string("data", None, "CSV of videos, FakeAVCeleb directory, prepared shards, or "
                      "a folder of (unlabelled) videos.")
  flags.DEFINE_enum("protocol", "all", PROTOCOLS, "Evaluation protocol.")
  flags.DEFINE_string("output", None, "Directory for the report files.")
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
  flags.DEFINE_integer("limit", None, "Score at most this many videos per column (a quick look).")
  flags.DEFINE_integer("split_seed", sources.FAKEAVCELEB_SPLIT_SEED,
                       "Seed of FakeAVCeleb's 70/30 split (raw FakeAVCeleb directories).")
  flags.DEFINE_enum("split_by", "video", ["video", "identity"],
                    "FakeAVCeleb split drawn by video (the paper) or by identity.")
  flags.mark_flags_as_required(["checkpoint", "data", "output"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
