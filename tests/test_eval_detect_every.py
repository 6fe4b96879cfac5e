"""Keyframe face detection in the eval windows (``detect_every``): every sampled frame for 1, the
keyframes only otherwise, the same crops and statuses as preparation's ``crop_faces``, and the
eval binary passing it to the windows of each video."""

import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.tiny import tiny_model
from havic_jax.checkpoints import exported
from havic_jax.evaluation import evaluate
from havic_jax.evaluation.evaluate import EvalOptions
from havic_jax.media import windows
from havic_jax.media.decode import Media
from havic_jax.media.faces import (crop_faces, crop_region, keyframes, nearest_detected,
                                   scaled_box)
from havic_jax.models.config import model_config_from
from havic_jax.models.havic_models import build_model, example_inputs

RATE = 16000
CROP = 32


def moving_face(seconds=6.0, fps=25):
  """uint8 [150, 64, 96, 3] frames of a bright 24×24 block drifting right and down by a
  non-integer number of pixels per frame; blue pixel (0, 0) holds the frame index."""
  frames = np.full((int(seconds * fps), 64, 96, 3), 40, np.uint8)
  for i, frame in enumerate(frames):
    x, y = 4 + int(0.37 * i), 8 + int(0.13 * i)
    frame[y:y + 24, x:x + 24, 0] = 230
    frame[0, 0, 2] = i
  return Media("moving.mp4", frames, float(fps), None, RATE)


class Counting:
  """A detector that records the index of each frame it sees; the box is the bright block,
  None for the frame indices in ``missing``."""

  def __init__(self, missing=()):
    self.seen, self.missing = [], set(missing)

  def __call__(self, frame):
    self.seen.append(int(frame[0, 0, 2]))
    if self.seen[-1] in self.missing:
      return None
    ys, xs = np.nonzero(frame[..., 0] == 230)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def test_detecting_every_frame_is_one_detection_per_sampled_frame():
  media = moving_face()
  detect = Counting()
  cut = windows.extract_windows(media, detect, crop_size=CROP, detect_every=1)
  sampled = cut.plan.frame_indices
  assert detect.seen == sampled.tolist() and len(sampled) == 30
  # Each sampled frame cropped with its own detection, scaled as in training.
  frames = media.frames[sampled]
  expected = np.stack([crop_region(frame, scaled_box(box, 96, 64), CROP) for frame, box in
                       zip(frames, nearest_detected([Counting()(f) for f in frames]))])
  np.testing.assert_array_equal(cut.crops, expected)
  assert cut.status == windows.OK and cut.faces_detected.all()
  default = windows.extract_windows(media, Counting(), crop_size=CROP)
  np.testing.assert_array_equal(default.crops, cut.crops)


@pytest.mark.parametrize("every", [2, 4, 7])
def test_keyframes_only_are_detected_and_keep_their_crops(every):
  media = moving_face()
  full = windows.extract_windows(media, Counting(), crop_size=CROP)
  detect = Counting()
  sparse = windows.extract_windows(media, detect, crop_size=CROP, detect_every=every)
  chosen = keyframes(len(sparse.plan.frame_indices), every)
  assert chosen.tolist() == sorted(set(range(0, 30, every)) | {29})
  assert detect.seen == sparse.plan.frame_indices[chosen].tolist()
  np.testing.assert_array_equal(sparse.crops[chosen], full.crops[chosen])
  # Between keyframes the interpolated box is within a pixel or two of the block's.
  assert np.abs(sparse.crops.astype(int) - full.crops).mean() < 4
  assert sparse.status == windows.OK and sparse.faces_detected.all()
  np.testing.assert_array_equal(sparse.window_video(3), sparse.crops[6:22])


def test_statuses_and_crops_follow_the_preparation_clips():
  """A face missing on a frame between keyframes is interpolated over (OK, as a prepared clip
  counts it); missing on a keyframe, its neighbours borrow the nearest box (PARTIAL_FACE)."""
  media = moving_face()
  sampled = windows.plan_windows(len(media.frames), media.fps, 0).frame_indices
  for missing, status in (([sampled[5]], windows.OK), ([sampled[4]], windows.PARTIAL_FACE),
                          (sampled, windows.NO_FACE)):
    cut = windows.extract_windows(media, Counting(missing), crop_size=CROP, detect_every=2)
    assert cut.status == status
    if status != windows.NO_FACE:
      crops, detected = crop_faces(media.frames[sampled], Counting(missing), 0.0, CROP, 2)
      np.testing.assert_array_equal(cut.crops, crops)
      np.testing.assert_array_equal(cut.faces_detected, detected)
  every_frame = windows.extract_windows(media, Counting([sampled[5]]), crop_size=CROP)
  assert every_frame.status == windows.PARTIAL_FACE


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
  """An export of an (untrained) tiny fine-tuning model: every module."""
  cfg = model_config_from(tiny_model())
  params = nn.unbox(build_model(cfg, "finetune").init(
      jax.random.key(1), *example_inputs(cfg, kept_tokens=False))["params"])
  directory = tmp_path_factory.mktemp("finetune_export") / "export"
  exported.export_params(params, tiny_model(), "finetune", "reference", directory,
                         modules=list(params))
  return directory


def test_eval_scores_with_keyframe_detection(synthetic_corpus, classifier_export, tmp_path,
                                             monkeypatch):
  received = []

  def recording(*args, **kwargs):
    received.append(kwargs["detect_every"])
    return extract_windows(*args, **kwargs)

  extract_windows = windows.extract_windows
  monkeypatch.setattr(windows, "extract_windows", recording)
  corpus = pathlib.Path(synthetic_corpus) / "FakeAVCeleb"
  real = sorted(corpus.glob("RealVideo-RealAudio/**/*.mp4"))[0]
  fake = sorted(corpus.glob("RealVideo-FakeAudio/**/*.mp4"))[0]
  listing = tmp_path / "videos.csv"
  listing.write_text(f"video_path,overall_label\n{real},0\n{fake},1\n")
  outcome = evaluate.run(str(classifier_export), str(listing), EvalOptions(
      protocol="all", output=str(tmp_path / "report"), batch_size=8, detect_every=2))
  assert received == [2, 2]
  assert [v.status for v in outcome["videos"]] == ["ok", "ok"]
  assert [v.num_windows for v in outcome["videos"]] == [2, 2]  # 3.5 s: 18 sampled frames
  meta = json.loads((tmp_path / "report" / "results.json").read_text())["meta"]
  assert meta["detect_every"] == 2
  with pytest.raises(ValueError, match="detect_every"):
    evaluate.run(str(classifier_export), str(listing),
                 EvalOptions(protocol="all", output=str(tmp_path / "none"), detect_every=0))
