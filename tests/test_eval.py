"""The eval binary: statuses of bad inputs, window scoring and batching, protocol tables."""

import csv
import dataclasses
import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.tiny import tiny_model
from havic_jax.checkpoints import exported, loading
from havic_jax.detectors import havic
from havic_jax.evaluation import evaluate, metrics, protocols, reports, scoring, videos
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax import sharding
from havic_jax.data import records
from havic_jax.models.config import model_config_from
from havic_jax.models.havic_models import build_model, example_inputs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = model_config_from(tiny_model())


def _export(tmp_path_factory, stage):
  inputs = example_inputs(TINY, stage == "pretrain")
  params = nn.unbox(build_model(TINY, stage).init(jax.random.key(1), *inputs)["params"])
  directory = tmp_path_factory.mktemp(f"{stage}_export") / "export"
  exported.export_params(params, tiny_model(), stage, "reference", directory, modules=list(params))
  return directory


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
  """An export of an (untrained) tiny fine-tuning model: every module."""
  return _export(tmp_path_factory, "finetune")


@pytest.fixture(scope="module")
def pretrain_export(tmp_path_factory):
  return _export(tmp_path_factory, "pretrain")


def _read_csv(path):
  with open(path, newline="") as file:
    return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def bad_inputs_report(tmp_path_factory, synthetic_corpus, bad_videos, classifier_export):
  """A CSV of two good (real) videos, a corrupt file, an audio-less, a face-less and a 2 s video,
  scored end to end (real MTCNN); returns (output directory, run outcome)."""
  directory = tmp_path_factory.mktemp("bad_inputs")
  good = sorted(pathlib.Path(synthetic_corpus).glob("FakeAVCeleb/RealVideo-RealAudio/**/*.mp4"))
  rows = [(p, 0) for p in good] + [(bad_videos[n], 1) for n in
                                   ("corrupt.mp4", "silent.mp4", "faceless.mp4", "short.mp4")]
  listing = directory / "videos.csv"
  listing.write_text("video_path,overall_label\n" + "".join(f"{p},{l}\n" for p, l in rows))
  output = directory / "report"
  outcome = evaluate.run(str(classifier_export), str(listing),
                         EvalOptions(protocol="all", output=str(output), batch_size=8))
  return output, outcome


def test_bad_inputs_each_get_a_status_and_none_is_dropped(bad_inputs_report):
  output, outcome = bad_inputs_report
  rows = {pathlib.Path(r["path"]).name: r for r in _read_csv(output / "per_video.csv")}
  assert len(rows) == 6
  statuses = {name: row["status"] for name, row in rows.items()}
  assert statuses["corrupt.mp4"] == "unreadable"
  assert statuses["silent.mp4"] == "no_audio"
  assert statuses["faceless.mp4"] == "no_face"
  assert statuses["short.mp4"] == "short_padded"
  assert sum(s == "ok" for s in statuses.values()) == 2
  assert rows["corrupt.mp4"]["score"] == "" and rows["corrupt.mp4"]["detail"]
  for name in ("silent.mp4", "faceless.mp4", "short.mp4"):
    assert 0.0 < float(rows[name]["score"]) < 1.0
  assert rows["short.mp4"]["num_windows"] == "1"
  # 3.5 s at 5 fps: 18 sampled frames -> windows at 0 and 0.4 s.
  assert [r["num_windows"] for r in rows.values() if r["status"] == "ok"] == ["2", "2"]
  summary = json.loads((output / "results.json").read_text())
  assert summary["videos"]["status_counts"]["unreadable"] == 1
  assert summary["videos"]["status_counts"]["no_face"] == 1
  for name in ("results.md", "roc.png", "pr.png", "per_window.csv"):
    assert (output / name).is_file(), name
  assert "corrupt.mp4 (unreadable)" in (output / "results.md").read_text()


def test_video_score_is_the_sigmoid_of_the_mean_window_logit(bad_inputs_report):
  output, _ = bad_inputs_report
  windows = {}
  for row in _read_csv(output / "per_window.csv"):
    windows.setdefault(row["video_id"], []).append(float(row["score"]))
  videos = [r for r in _read_csv(output / "per_video.csv") if r["score"]]
  assert len(videos) == 5
  for video in videos:
    p = np.array(windows[video["video_id"]], np.float64)
    mean_logit = np.mean(np.log(p / (1 - p)))
    assert float(video["score"]) == pytest.approx(1 / (1 + np.exp(-mean_logit)), abs=2e-6)


def test_windows_batched_across_videos_score_as_one_by_one(classifier_export):
  checkpoint = loading.load(str(classifier_export))
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  scorer = scoring.WindowScorer(checkpoint, mesh, batch_size=8, classifier=True)
  rng = np.random.default_rng(0)
  shape_v = (TINY.num_frames, TINY.image_size, TINY.image_size, 3)
  items = [(k, rng.integers(0, 256, (n,) + shape_v, np.uint8),
            rng.standard_normal((n, TINY.audio_frames, TINY.mel_bins)).astype(np.float32))
           for k, n in (("a", 3), ("b", 7), ("none", 0), ("c", 1))]
  items[2] = ("none", None, None)
  streamed = list(scorer.score_stream(items))
  assert [key for key, _ in streamed] == ["a", "b", "none", "c"]
  assert streamed[2][1] is None
  for (key, video, audio), (_, out) in zip(items, streamed):
    if video is None:
      continue
    alone = scorer.score(video, audio)
    assert out["overall"].shape == (len(video),)
    assert out["coherence"].shape == (len(video), TINY.num_segments)
    for name in ("overall", "video", "audio", "coherence"):
      np.testing.assert_allclose(out[name], alone[name], rtol=1e-5, atol=1e-5, err_msg=key)


def test_coherence_is_the_cosine_of_segment_means():
  rng = np.random.default_rng(1)
  segments, patches_a, patches_v, dim = 4, 3, 5, 6
  audio = rng.standard_normal((2, segments * (1 + patches_a), dim)).astype(np.float32)
  video = rng.standard_normal((2, segments * (1 + patches_v), dim)).astype(np.float32)
  got = np.asarray(havic.coherence(audio, video, segments))
  for b in range(2):
    for t in range(segments):
      a = audio[b].reshape(segments, 1 + patches_a, dim)[t, 1:].mean(0)
      v = video[b].reshape(segments, 1 + patches_v, dim)[t, 1:].mean(0)
      assert got[b, t] == pytest.approx(a @ v / np.linalg.norm(a) / np.linalg.norm(v), abs=1e-5)


def test_a_pretraining_checkpoint_needs_the_coherence_scorer(pretrain_export):
  checkpoint = loading.load(str(pretrain_export))
  mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  with pytest.raises(scoring.CheckpointError, match="--scorer=coherence"):
    scoring.WindowScorer(checkpoint, mesh, batch_size=8, classifier=True)


def test_leave_one_out_on_prepared_shards_with_the_coherence_scorer(prepared_corpus,
                                                                    pretrain_export, tmp_path):
  outcome = evaluate.run(str(pretrain_export), str(prepared_corpus),
                         EvalOptions(protocol="fakeavceleb_loo", output=str(tmp_path),
                                     scorer="coherence", batch_size=8))
  (table,) = outcome["results"]
  assert list(table.columns) == ["RVFA", "FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL", "AVG"]
  manifest = records.open_prepared(str(prepared_corpus)).manifest
  rows = {r["video_id"]: r for r in _read_csv(tmp_path / "per_video.csv")}
  for category in ("RVFA", "FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL"):
    ids = manifest["splits"][f"loo-{category}-test"]
    scores = np.array([float(rows[i]["score"]) for i in ids])
    labels = np.array([int(rows[i]["label"]) for i in ids])
    expected = metrics.binary_metrics(scores, labels)
    for name in ("ap", "auc"):
      np.testing.assert_equal(table.columns[category][name], expected[name])
  values = [table.columns[c]["auc"] for c in list(table.columns)[:-1]]
  np.testing.assert_allclose(table.columns["AVG"]["auc"], np.nanmean(values))
  for row in rows.values():  # coherence scores: (1 − cos) / 2, least coherent at window starts
    assert 0.0 <= float(row["score"]) <= 1.0
    assert row["least_coherent_s"] in ("0.0", "")
  assert "one checkpoint scored every category" in (tmp_path / "results.md").read_text()


def _result(category, score, label):
  return reports.VideoResult(video_id=f"{category}{score}", path="", label=label,
                             category=category, score=score, num_windows=1,
                             window_starts=[0.0], window_scores=[score], least_coherent=[],
                             status="ok")


def test_intra_tables_list_every_fake_category_in_the_paper_order():
  videos = [_result("real", 0.1, 0), _result("real", 0.4, 0), _result("FVFA-WL", 0.9, 1),
            _result("RVFA", 0.3, 1), _result("FVRA-WL", 0.8, 1), _result("FVRA-FS", 0.7, 1)]
  overall, per_category = protocols.protocol_results(
      "fakeavceleb_intra", "m", {"all": videos}, {}, thresholded=True, notes=())
  assert overall.columns["all"]["acc"] == pytest.approx(5 / 6)  # 0.3 is the one mistake
  assert overall.columns["all"]["auc"] == pytest.approx(7 / 8)
  assert list(per_category.columns) == ["RVFA", "FVRA-WL", "FVFA-WL", "FVRA-FS", "AVG"]
  assert per_category.columns["RVFA"]["auc"] == pytest.approx(0.5)  # 0.3: above 0.1, below 0.4
  assert per_category.columns["AVG"]["auc"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_a_folder_of_videos_is_read_unlabelled(bad_videos):
  data = videos.load_data(str(bad_videos["corrupt.mp4"].parent))
  assert [v.video_id for v in data.videos] == sorted(bad_videos)
  assert all(v.label is None for v in data.videos)
  assert protocols.protocol_videos("all", data, None) == {"all": list(data.videos)}


def test_robustness_scores_each_re_encoding(synthetic_corpus, classifier_export, tmp_path):
  corpus = pathlib.Path(synthetic_corpus) / "FakeAVCeleb"
  real = sorted(corpus.glob("RealVideo-RealAudio/**/*.mp4"))[0]
  fake = sorted(corpus.glob("RealVideo-FakeAudio/**/*.mp4"))[0]
  listing = tmp_path / "videos.csv"
  listing.write_text(f"video_path,overall_label\n{real},0\n{fake},1\n")
  outcome = evaluate.run(str(classifier_export), str(listing),
                         EvalOptions(protocol="robustness", output=str(tmp_path / "report"),
                                     batch_size=8))
  (table,) = outcome["results"]
  assert list(table.columns) == ["clean", "crf23_44k", "crf40_16k"]
  rows = {r["video_id"]: r for r in _read_csv(tmp_path / "report" / "per_video.csv")}
  assert len(rows) == 6  # each video clean and under both conditions
  for condition in ("", "@crf23_44k", "@crf40_16k"):
    scores = [float(rows[f"{p}{condition}"]["score"]) for p in (str(real), str(fake))]
    assert table.columns[condition.lstrip("@") or "clean"]["auc"] == float(scores[1] > scores[0])
  assert rows[f"{fake}@crf40_16k"]["score"] != rows[str(fake)]["score"]  # it did re-encode


def test_each_flag_gives_the_option_of_its_name():
  """The eval binary builds its EvalOptions from the flags of the fields' names; flags left
  unset give the options' defaults (but --beam_options, which names the DirectRunner)."""
  script = ("import dataclasses, json\n"
            "from havic_jax import eval as binary\n"
            "binary.define_flags()\n"
            "binary.FLAGS(['eval', '--checkpoint=C', '--data=D', '--windows=W', '--windows_only',"
            " '--detect_every=3', '--protocol=kodf'])\n"
            "print(json.dumps(dataclasses.asdict(binary.options_from_flags())))\n")
  printed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                           text=True, check=True, timeout=120).stdout
  options = EvalOptions(**json.loads(printed.splitlines()[-1]))
  assert options == dataclasses.replace(EvalOptions(), protocol="kodf", windows="W",
                                        windows_only=True, detect_every=3,
                                        beam_options="--runner=DirectRunner")
