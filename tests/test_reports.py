"""Eval reports: results.json (NaN as null), the paper-style Markdown tables and video
statuses, ROC/PR PNGs (a subplot per protocol with curves), per-video and per-window CSVs."""

import csv
import json
import math
import struct

import numpy as np
import pytest

from havic_jax.evaluation import reports
from havic_jax.evaluation.reports import ProtocolResult, VideoResult

NAN = float("nan")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_results():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 20)
  curve = (np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1), labels)
  intra = ProtocolResult(
      protocol="fakeavceleb_intra", title="FakeAVCeleb intra-dataset (70/30)", method="havic",
      columns={"RVFA": {"ap": 0.98765, "auc": 1.0}, "FVRA-WL": {"ap": NAN, "auc": 0.5},
               "AVG": {"ap": 0.98765, "auc": 0.75}},
      metric_names=("ap", "auc"),
      curves={"RVFA": curve, "FVRA-WL": (curve[0], np.ones(40, int))},  # the latter: not drawn
      notes=("AVG: unweighted mean over categories",))
  baseline = ProtocolResult(  # a second row of the same table, lacking the FVRA-WL column
      protocol="fakeavceleb_intra", title="FakeAVCeleb intra-dataset (70/30)",
      method="baseline", columns={"RVFA": {"ap": 0.5, "auc": 0.25}, "AVG": {"ap": 0.5}},
      metric_names=("ap", "auc"), curves={"RVFA": (1 - curve[0], labels)})
  cross = ProtocolResult(
      protocol="kodf_cross", title="KoDF cross-dataset", method="havic",
      columns={"all": {"acc": 0.75, "auc": np.float64(0.8125)}}, metric_names=("acc", "auc"))
  return [intra, baseline, cross]


VIDEOS = [
    VideoResult("v1", "data/a|b.mp4", 1, "RVFA", 0.9, 3, [0.0, 3.2, 6.4], [0.8, 0.95, 0.9],
                [3.2, 6.4], "ok"),
    VideoResult("v2", "data/real.mp4", 0, "real", 0.5, 1, [0.0], [0.5], [], "partial_face",
                "2 of 16 frames without a face"),
    VideoResult("v3", "data/broken.mp4", None, "", NAN, 0, [], [], [], "unreadable",
                "moov atom\nnot found"),
    VideoResult("v4", "data/crash.mp4", 1, "FVRA-WL", NAN, 0, [], [], [], "error",
                "ValueError: boom"),
    VideoResult("v5", "data/noface.mp4", 1, "FVRA-WL", 0.123456789, 1, [0.04], [NAN], [0.04],
                "no_face"),
]
META = {"checkpoint": "/ckpt/havic_finetune", "scorer": "head", "data_hash": "abc123",
        "versions": {"jax": "0.4.38", "havic_jax": "0.1"}, "threshold": np.float32(0.5),
        "missing": NAN}


def cells(line):
  return [cell.strip() for cell in line.strip().strip("|").split("|")]


def png_size(path):
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  directory = tmp_path_factory.mktemp("report")
  return directory, reports.write_report(directory / "eval", make_results(), VIDEOS, META)


def test_returned_paths(report):
  directory, paths = report
  assert set(paths) == {"json", "markdown", "roc", "pr", "per_video", "per_window"}
  for name, path in paths.items():
    assert path == directory / "eval" / reports.FILES[name] and path.is_file()


def test_results_json(report):
  _, paths = report
  summary = json.loads(paths["json"].read_text(),
                       parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
  assert summary["meta"] == {"checkpoint": "/ckpt/havic_finetune", "scorer": "head",
                             "data_hash": "abc123",
                             "versions": {"jax": "0.4.38", "havic_jax": "0.1"},
                             "threshold": 0.5, "missing": None}
  intra, baseline, cross = summary["protocols"]
  assert intra == {"protocol": "fakeavceleb_intra", "title": "FakeAVCeleb intra-dataset (70/30)",
                   "method": "havic", "metric_names": ["ap", "auc"],
                   "columns": {"RVFA": {"ap": 0.98765, "auc": 1.0},
                               "FVRA-WL": {"ap": None, "auc": 0.5},
                               "AVG": {"ap": 0.98765, "auc": 0.75}},
                   "notes": ["AVG: unweighted mean over categories"]}
  assert list(intra["columns"]) == ["RVFA", "FVRA-WL", "AVG"]
  assert baseline["method"] == "baseline" and baseline["columns"]["AVG"] == {"ap": 0.5}
  assert cross["columns"] == {"all": {"acc": 0.75, "auc": 0.8125}} and cross["notes"] == []
  assert summary["videos"] == {
      "total": 5, "scored": 3, "unscored": 2,
      "status_counts": {"ok": 1, "partial_face": 1, "no_face": 1, "short_padded": 0,
                        "no_audio": 0, "unreadable": 1, "error": 1, "rejected": 0}}


def test_markdown_tables_and_videos(report):
  _, paths = report
  text = paths["markdown"].read_text()
  lines = text.splitlines()
  assert lines[0] == "# HAVIC evaluation"
  assert "- checkpoint: /ckpt/havic_finetune" in lines
  assert '- versions: {"jax": "0.4.38", "havic_jax": "0.1"}' in lines

  intra = lines.index("## FakeAVCeleb intra-dataset (70/30)")
  header = lines.index("| method   | RVFA AP | RVFA AUC | FVRA-WL AP | FVRA-WL AUC | AVG AP "
                       "| AVG AUC |")
  assert intra < header
  assert lines[header + 1] == ("|----------|--------:|---------:|-----------:|------------:|"
                               "-------:|--------:|")
  assert cells(lines[header + 2]) == ["havic", "98.77", "100.00", "–", "50.00", "98.77", "75.00"]
  assert cells(lines[header + 3]) == ["baseline", "50.00", "25.00", "–", "–", "50.00", "–"]
  assert lines[header + 5] == "- AVG: unweighted mean over categories"
  cross = lines.index("## KoDF cross-dataset")
  assert cells(lines[cross + 4]) == ["method", "all ACC", "all AUC"]
  assert cells(lines[cross + 6]) == ["havic", "75.00", "81.25"]
  assert text.count("## FakeAVCeleb") == 1  # both methods share one table

  videos = lines.index("## Videos")
  assert lines[videos + 2] == "5 videos: 3 scored, 2 not scored."
  status_rows = {cells(line)[0]: cells(line)[1:] for line in lines[videos + 6:videos + 6 + len(reports.STATUSES)]}
  assert status_rows == {s: [str(n), reports.STATUS_MEANINGS[s]] for s, n in
                         reports.status_counts(VIDEOS).items()}
  unscored = lines.index("### Not scored")
  assert lines[unscored + 2:] == ["- data/broken.mp4 (unreadable): moov atom not found",
                                  "- data/crash.mp4 (error): ValueError: boom"]


def test_per_video_csv(report):
  _, paths = report
  with open(paths["per_video"], newline="") as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == reports.PER_VIDEO_COLUMNS
    rows = list(reader)
  assert rows == [
      {"video_id": "v1", "path": "data/a|b.mp4", "label": "1", "category": "RVFA",
       "score": "0.900000", "prediction": "1", "num_windows": "3",
       "least_coherent_s": "3.2;6.4", "status": "ok", "detail": ""},
      {"video_id": "v2", "path": "data/real.mp4", "label": "0", "category": "real",
       "score": "0.500000", "prediction": "1", "num_windows": "1", "least_coherent_s": "",
       "status": "partial_face", "detail": "2 of 16 frames without a face"},
      {"video_id": "v3", "path": "data/broken.mp4", "label": "", "category": "", "score": "",
       "prediction": "", "num_windows": "0", "least_coherent_s": "", "status": "unreadable",
       "detail": "moov atom\nnot found"},
      {"video_id": "v4", "path": "data/crash.mp4", "label": "1", "category": "FVRA-WL",
       "score": "", "prediction": "", "num_windows": "0", "least_coherent_s": "",
       "status": "error", "detail": "ValueError: boom"},
      {"video_id": "v5", "path": "data/noface.mp4", "label": "1", "category": "FVRA-WL",
       "score": "0.123457", "prediction": "0", "num_windows": "1", "least_coherent_s": "0.0",
       "status": "no_face", "detail": ""}]


def test_per_window_csv(report):
  _, paths = report
  with open(paths["per_window"], newline="") as f:
    assert list(csv.reader(f)) == [
        list(reports.PER_WINDOW_COLUMNS),
        ["v1", "0", "0.00", "0.800000"], ["v1", "1", "3.20", "0.950000"],
        ["v1", "2", "6.40", "0.900000"], ["v2", "0", "0.00", "0.500000"],
        ["v5", "0", "0.04", ""]]


def test_plots_have_a_subplot_per_protocol_with_curves(report, tmp_path):
  _, paths = report
  expected = (round(reports.SUBPLOT_INCHES * reports.PLOT_DPI),) * 2  # only the intra plot
  for name in ("roc", "pr"):
    assert png_size(paths[name]) == expected
    assert paths[name].stat().length > 10_000
  two = [make_results()[0], make_results()[0]]
  two[1] = ProtocolResult("other", "Other", "havic", {}, ("auc",), curves=two[0].curves)
  wide = reports.write_report(tmp_path / "two", two, VIDEOS, META)
  assert png_size(wide["roc"]) == (2 * expected[0], expected[1])

  cross = make_results()[2]
  paths = reports.write_report(tmp_path / "none", [cross], VIDEOS, META)
  assert set(paths) == {"json", "markdown", "per_video", "per_window"}
  assert not (tmp_path / "none" / "roc.png").exists()
  assert not (tmp_path / "none" / "pr.png").exists()


def test_prediction_status_counts_and_validation():
  assert [v.prediction for v in VIDEOS] == [1, 1, None, None, 0]
  assert reports.status_counts([]) == dict.fromkeys(reports.STATUSES, 0)
  assert list(reports.status_counts(VIDEOS)) == list(reports.STATUSES)
  assert set(reports.STATUS_MEANINGS) == set(reports.STATUSES)
  assert reports.STATUSES == ("ok", "partial_face", "no_face", "short_padded", "no_audio",
                              "unreadable", "error", "rejected")
  with pytest.raises(ValueError, match="status"):
    VideoResult("x", "x.mp4", 1, "RVFA", 0.5, 0, [], [], [], "fine")
  with pytest.raises(ValueError, match="window"):
    VideoResult("x", "x.mp4", 1, "RVFA", 0.5, 1, [0.0], [], [], "ok")
  assert math.isnan(VIDEOS[2].score) and not VIDEOS[2].scored
