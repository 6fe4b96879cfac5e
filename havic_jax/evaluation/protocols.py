"""The paper's evaluation protocols (spec §12): which videos each scores, in which columns, and
its metric tables.

``all`` (every labelled video), ``fakeavceleb_intra`` (the seeded 70/30 test part),
``fakeavceleb_loo`` (leave one category out, one model per held-out category),
``kodf``, ``hifi_avdf`` (per generator) and ``robustness`` (every video re-encoded,
``havic_jax.media.reencode.CONDITIONS``, then scored).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from havic_jax.data import sources
from havic_jax.evaluation import metrics, reports
from havic_jax.evaluation.videos import EvalData, EvalVideo

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
