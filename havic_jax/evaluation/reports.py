"""Human-readable eval reports: metric tables, ROC/PR plots and per-video/per-window CSVs.

:func:`write_report` writes, under ``output_dir``:

  results.json    the caller's meta, every protocol's metric values and notes, video counts
  results.md      the run, one paper-style table per protocol (a row per method), video
                  statuses with their meanings and the files that were not scored
  roc.png pr.png  a subplot per protocol with curves, a curve per column group (only written
                  when some protocol has curves)
  per_video.csv   one row per video
  per_window.csv  one row per scored window

Metric values are fractions in [0, 1]; the Markdown shows them in percent with two decimals
(0.98765 -> "98.77") and NaN as "–"; JSON writes NaN as null. Plots are drawn on matplotlib's
Agg canvas directly, leaving pyplot's global backend alone. ``output_dir`` may be a ``gs://``
URI: every file goes through ``etils.epath`` (:mod:`havic_jax.storage`).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import io
import json
import math
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from havic_jax.evaluation import metrics
from havic_jax import storage

STATUS_MEANINGS = {
    "ok": "a face in every sampled frame and at least one full window; scored",
    "partial_face": "some sampled frames had no detected face; they borrow the nearest "
                    "detected box",
    "no_face": "no face in any sampled frame; scored on the centre square of the frame",
    "short_padded": "shorter than one 3.2 s window; the last frame is repeated and the audio "
                    "padded with silence to fill it",
    "no_audio": "no audio track; scored with the video head (audio-missing mode)",
    "unreadable": "the file could not be decoded; not scored",
    "error": "an unexpected error; not scored, see detail",
    "rejected": "rejected when the data was prepared (reason in detail); not scored",
}
STATUSES = tuple(STATUS_MEANINGS)  # a video has exactly one; precedence is the caller's
FILES = {"json": "results.json", "markdown": "results.md", "roc": "roc.png", "pr": "pr.png",
         "per_video": "per_video.csv", "per_window": "per_window.csv"}
PER_VIDEO_COLUMNS = ("video_id", "path", "label", "category", "score", "prediction",
                     "num_windows", "least_coherent_s", "status", "detail")
PER_WINDOW_COLUMNS = ("video_id", "window", "start_s", "score")
MISSING = "–"  # a NaN metric in the Markdown tables
SUBPLOT_INCHES = 4.5  # width and height of one protocol's plot
PLOT_DPI = 120


@dataclasses.dataclass(frozen=True)
class VideoResult:
  """One evaluated video.

  Attributes:
    video_id: unique id of the video in the run.
    path: the video file.
    label: 1 fake, 0 real, None unknown.
    category: "real", a fake kind ("RVFA", "FVRA-WL", ...) or a generator name; "" if unknown.
    score: fake probability; NaN when not scored.
    num_windows: number of 3.2 s windows scored.
    window_starts: [W] start time of each window in seconds.
    window_scores: [W] each window's fake probability (coherence for the coherence scorer).
    least_coherent: start times in seconds of the least coherent windows (may be empty).
    status: one of ``STATUSES``.
    detail: free text, e.g. the error message of an unscored video.
  """
  video_id: str
  path: str
  label: Optional[int]
  category: str
  score: float
  num_windows: int
  window_starts: Sequence[float]
  window_scores: Sequence[float]
  least_coherent: Sequence[float]
  status: str
  detail: str = ""

  def __post_init__(self):
    if self.status not in STATUSES:
      raise ValueError(f"status {self.status!r} of {self.video_id!r} is not one of {STATUSES}")
    if self.label not in (None, 0, 1):
      raise ValueError(f"label {self.label!r} of {self.video_id!r} must be 0, 1 or None")
    if len(self.window_starts) != len(self.window_scores):
      raise ValueError(f"{self.video_id!r}: {len(self.window_starts)} window starts but "
                       f"{len(self.window_scores)} window scores")

  @property
  def scored(self) -> bool:
    return not math.isnan(self.score)

  @property
  def prediction(self) -> Optional[int]:
    """1 (fake) when ``score >= metrics.THRESHOLD``, else 0; None when not scored."""
    return int(self.score >= metrics.THRESHOLD) if self.scored else None


@dataclasses.dataclass(frozen=True)
class ProtocolResult:
  """One method's results on one eval protocol (a table row of the paper).

  Attributes:
    protocol: protocol id, e.g. "fakeavceleb_intra"; results sharing it share a table.
    title: human title, e.g. "FakeAVCeleb intra-dataset (70/30)".
    method: the row label, e.g. the checkpoint name.
    columns: ordered {column group: {metric: value in [0, 1]}}, e.g. {"RVFA": {"ap", "auc"},
      ..., "AVG": {...}}.
    metric_names: the metrics shown per column group, e.g. ("ap", "auc").
    curves: {column group: (scores [N], labels [N])} for the ROC/PR plots; may be empty.
    notes: lines shown under the table.
  """
  protocol: str
  title: str
  method: str
  columns: Mapping[str, Mapping[str, float]]
  metric_names: Sequence[str]
  curves: Mapping[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
  notes: Sequence[str] = ()


class _Curve(NamedTuple):
  points: Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]
  metric: str  # the binary_metrics key in the legend
  xlabel: str
  ylabel: str
  legend_loc: str


CURVES = {"roc": _Curve(metrics.roc_points, "auc", "false positive rate", "true positive rate",
                        "lower right"),
          "pr": _Curve(metrics.pr_points, "ap", "recall", "precision", "lower left")}


def versions() -> Dict[str, str]:
  """Versions of havic_jax and the libraries that shape the numbers (results.json's meta)."""
  out = {}
  for package in ("havic_jax", "jax", "flax", "numpy", "scikit-learn", "av"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = "unknown"
  return out


def status_counts(videos: Sequence[VideoResult]) -> Dict[str, int]:
  """{status: number of videos} for every status in ``STATUSES`` (zeros included)."""
  counts = dict.fromkeys(STATUSES, 0)
  for video in videos:
    counts[video.status] += 1
  return counts


def _jsonable(value: Any) -> Any:
  """``value`` with mappings, sequences and NumPy values made JSON types, non-finite floats
  None and anything else (paths, ...) its ``str``."""
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return _jsonable(value.item())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if value is None or isinstance(value, (bool, int, str)):
    return value
  return str(value)


def _by_protocol(results: Sequence[ProtocolResult]) -> Dict[str, List[ProtocolResult]]:
  grouped: Dict[str, List[ProtocolResult]] = {}
  for result in results:
    grouped.setdefault(result.protocol, []).append(result)
  return grouped


def _percent(value: Optional[float]) -> str:
  return MISSING if value is None or math.isnan(value) else f"{100 * float(value):.2f}"


def _cell(text: Any) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> List[str]:
  """A Markdown table with each column padded to its widest cell, so that it reads as plain
  text too; ``align`` has an "l" (left) or "r" (right) per column."""
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
  line = lambda cells: "| " + " | ".join(
      c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)) + " |"
  rule = "|" + "|".join("-" * (w + 1) + (":" if a == "r" else "-")
                        for w, a in zip(widths, align)) + "|"
  return [line(header), rule, *(line(row) for row in rows)]


def _protocol_markdown(results: Sequence[ProtocolResult]) -> List[str]:
  """One protocol's section: its title, a table with a row per method and a "{column group}
  {METRIC}" column per column group and metric (first-seen order), then the notes."""
  columns = list(dict.fromkeys(c for r in results for c in r.columns))
  names = list(dict.fromkeys(m for r in results for m in r.metric_names))
  header = ["method"] + [f"{_cell(c)} {m.upper()}" for c in columns for m in names]
  rows = [[_cell(r.method)] + [_percent(r.columns.get(c, {}).get(m)) for c in columns
                               for m in names] for r in results]
  notes = list(dict.fromkeys(n for r in results for n in r.notes))
  lines = [f"## {results[0].title}", "",
           f"Protocol `{results[0].protocol}`; values in percent.", ""]
  lines += _table(header, rows, "l" + "r" * (len(header) - 1)) + [""]
  if notes:
    lines += [f"- {note}" for note in notes] + [""]
  return lines


def _markdown(results: Sequence[ProtocolResult], videos: Sequence[VideoResult],
              meta: Mapping[str, Any]) -> str:
  lines = ["# HAVIC evaluation", "", "## Run", ""]
  for key, value in meta.items():
    shown = value if isinstance(value, str) else json.dumps(_jsonable(value))
    lines.append(f"- {key}: {shown}")
  lines.append("")
  for group in _by_protocol(results).values():
    lines += _protocol_markdown(group)
  unscored = [v for v in videos if not v.scored]
  counts = status_counts(videos)
  lines += ["## Videos", "",
            f"{len(videos)} videos: {len(videos) - len(unscored)} scored, "
            f"{len(unscored)} not scored.", ""]
  lines += _table(["status", "videos", "meaning"],
                  [[s, str(counts[s]), STATUS_MEANINGS[s]] for s in STATUSES], "lrl")
  if unscored:
    lines += ["", "### Not scored", ""]
    for video in unscored:
      detail = " ".join(video.detail.split())  # on one line
      lines.append(f"- {video.path} ({video.status})" + (f": {detail}" if detail else ""))
  return "\n".join(lines) + "\n"


def _write_curves(path: epath.Path, results: Sequence[ProtocolResult], kind: str) -> bool:
  """Draws ``kind`` ("roc" or "pr") curves, a subplot per protocol with a plottable curve (both
  labels present); writes ``path`` and returns True unless there is none."""
  curve = CURVES[kind]
  plots = []  # (title, [(legend label, x, y)])
  for group in _by_protocol(results).values():
    lines = []
    for result in group:
      for column, (scores, labels) in result.curves.items():
        if len(np.unique(labels)) < 2:
          continue
        x, y = curve.points(scores, labels)
        value = metrics.binary_metrics(scores, labels)[curve.metric]
        name = f"{result.method} · {column}" if len(group) > 1 else column
        lines.append((f"{name} ({curve.metric.upper()} {_percent(value)})", x, y))
    if lines:
      plots.append((group[0].title, lines))
  if not plots:
    return False
  figure = Figure(figsize=(SUBPLOT_INCHES * len(plots), SUBPLOT_INCHES), layout="constrained")
  FigureCanvasAgg(figure)
  for axes, (title, lines) in zip(figure.subplots(1, len(plots), squeeze=False)[0], plots):
    if kind == "roc":
      axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    for label, x, y in lines:
      axes.plot(x, y, label=label, drawstyle="steps-post" if kind == "pr" else "default")
    axes.set(title=title, xlabel=curve.xlabel, ylabel=curve.ylabel, xlim=(0, 1),
             ylim=(0, 1.02))
    axes.legend(loc=curve.legend_loc, fontsize="small")
  with path.open("wb") as file:
    figure.savefig(file, format="png", dpi=PLOT_DPI)
  return True


def _number(value: Optional[float], digits: int) -> str:
  return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def write_report(output_dir: storage.PathLike, results: Sequence[ProtocolResult],
                 videos: Sequence[VideoResult], meta: Mapping[str, Any]
                 ) -> Dict[str, epath.Path]:
  """Writes the report files (module docstring) into ``output_dir`` (created if missing).

  Args:
    output_dir: the report directory, a local path or a ``gs://`` URI.
    results: one entry per (protocol, method); a protocol's results form one table.
    videos: every video of the run, scored or not.
    meta: the run's description (checkpoint, scorer, data hash, versions, ...), written as
      given (NumPy values converted, NaN as null, unknown types as their ``str``).

  Returns:
    {"json", "markdown", "roc", "pr", "per_video", "per_window"} -> written path; "roc" and
    "pr" only when some protocol has curves.
  """
  directory = storage.path(output_dir)
  directory.mkdir(parents=True, exist_ok=True)
  paths = {name: directory / file for name, file in FILES.items()}
  scored = sum(v.scored for v in videos)
  summary = {
      "meta": meta,
      "protocols": [{"protocol": r.protocol, "title": r.title, "method": r.method,
                     "metric_names": r.metric_names, "columns": r.columns, "notes": r.notes}
                    for r in results],
      "videos": {"total": len(videos), "scored": scored, "unscored": len(videos) - scored,
                 "status_counts": status_counts(videos)}}
  paths["json"].write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
  paths["markdown"].write_text(_markdown(results, videos, meta))
  for kind in CURVES:
    if not _write_curves(paths[kind], results, kind):
      del paths[kind]
  per_video, per_window = io.StringIO(newline=""), io.StringIO(newline="")
  writer = csv.writer(per_video)
  writer.writerow(PER_VIDEO_COLUMNS)
  for v in videos:
    writer.writerow([v.video_id, v.path, "" if v.label is None else v.label, v.category,
                     _number(v.score, 6), "" if v.prediction is None else v.prediction,
                     v.num_windows, ";".join(f"{t:.1f}" for t in v.least_coherent),
                     v.status, v.detail])
  writer = csv.writer(per_window)
  writer.writerow(PER_WINDOW_COLUMNS)
  for v in videos:
    for i, (start, score) in enumerate(zip(v.window_starts, v.window_scores)):
      writer.writerow([v.video_id, i, _number(start, 2), _number(score, 6)])
  paths["per_video"].write_bytes(per_video.getvalue().encode())
  paths["per_window"].write_bytes(per_window.getvalue().encode())
  return paths
