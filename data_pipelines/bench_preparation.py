"""The input bench's preparation timings (``data_pipelines.bench``): clips/s of a whole
preparation per runner and ``--detect_every`` value, milliseconds per clip of each preparation
stage, and the agreement of keyframe (and centre) crops with detection on every frame
(``--per_stage``)."""

from __future__ import annotations

import pathlib
import time
from typing import Any, Dict, List, Sequence

import numpy as np

from havic_jax.data import records


def time_preparation(videos: pathlib.Path, output: pathlib.Path, workers: int,
                     runner: str = "local", detect_every: int = 1,
                     videos_per_shard: int = 4) -> Dict[str, Any]:
  """Prepares the corpus in ``videos`` into ``output`` with ``workers`` processes of
  ``runner`` ("beam": the DirectRunner in multi-processing mode); returns clips/s. The local
  runner hands each process whole shards, so ``videos_per_shard`` must leave a shard for
  every worker; Beam spreads single videos."""
  from data_pipelines.prepare import shard_runner
  from havic_jax.data import prepare
  beam_options = (f"--runner=DirectRunner --direct_num_workers={workers} "
                  f"--direct_running_mode=multi_processing")
  started = time.perf_counter()
  manifest = prepare.prepare("fakeavceleb", str(videos), str(output), workers=workers,
                             videos_per_shard=videos_per_shard,
                             options=prepare.PrepareOptions(detect_every=detect_every),
                             run_shards=shard_runner(runner, beam_options))
  seconds = time.perf_counter() - started
  clips = manifest["counts"]["clips"]
  return {"stage": "prepare", "runner": runner, "detect_every": detect_every,
          "videos_per_shard": videos_per_shard, "workers": workers, "clips": clips,
          "seconds": seconds, "clips_per_second": clips / seconds,
          "clips_per_second_per_worker": clips / seconds / workers}


def _recorded_clips(video: pathlib.Path, detect) -> List[tuple]:
  """(frames uint8 [16, H, W, 3], detected boxes) of each clip of ``video`` as the
  preparation cuts it (``extract_clips``), recorded from the detector's calls."""
  from havic_jax.media.clips import extract_clips
  from havic_jax.media.decode import FRAMES_PER_CLIP, read_media
  calls: List[tuple] = []

  def recording(frame):
    calls.append((frame, detect(frame)))
    return calls[-1][1]

  extract_clips(read_media(video), recording)
  return [(np.stack([f for f, _ in calls[i:i + FRAMES_PER_CLIP]]),
           [b for _, b in calls[i:i + FRAMES_PER_CLIP]])
          for i in range(0, len(calls), FRAMES_PER_CLIP)]


def stage_times(videos: Sequence[pathlib.Path]) -> Dict[str, Any]:
  """Milliseconds per clip of each preparation stage on ``videos``, one process: decoding
  (``read_media``, every frame), face detection (MTCNN on the clip's 16 frames), the rest of
  ``extract_clips`` (frame selection, crop and resize to 224²), JPEG encoding of the record,
  and the fbank the loader computes from the clip's audio."""
  from havic_jax.media import fbank
  from havic_jax.media.clips import extract_clips
  from havic_jax.media.decode import read_media
  from havic_jax.media.faces import mtcnn_detector, process_detector
  mtcnn = process_detector(mtcnn_detector)
  totals = dict.fromkeys(("decode", "detect", "crop_resize", "jpeg", "fbank"), 0.0)
  clips = 0

  def detect(frame):
    started = time.perf_counter()
    box = mtcnn(frame)
    totals["detect"] += time.perf_counter() - started
    return box

  for video in videos:
    started = time.perf_counter()
    media = read_media(video)
    totals["decode"] += time.perf_counter() - started
    detect_before = totals["detect"]
    started = time.perf_counter()
    extracted, _ = extract_clips(media, detect)
    totals["crop_resize"] += (time.perf_counter() - started
                              - (totals["detect"] - detect_before))
    started = time.perf_counter()
    for clip in extracted:
      records.encode(records.ClipRecord(clip.frames, clip.audio, 0, 0, 0, "real", "",
                                        video.name, clip.start), "jpeg")
    totals["jpeg"] += time.perf_counter() - started
    started = time.perf_counter()
    for clip in extracted:
      fbank.audio_features(clip.audio.astype(np.float32) / 32767.0)
    totals["fbank"] += time.perf_counter() - started
    clips += len(extracted)
  per_clip = {name: 1000 * seconds / clips for name, seconds in totals.items()}
  return {"stage": "stages", "clips": clips, "ms_per_clip": per_clip,
          "ms_per_clip_total": sum(v for k, v in per_clip.items() if k != "fbank")}


def _replay(boxes: Sequence[Any]):
  """A detector that returns ``boxes`` one call after another (the frame is ignored)."""
  remaining = iter(boxes)
  return lambda frame: next(remaining)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """Intersection over union of two (x0, y0, x1, y1) boxes."""
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = width * height
  area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
  return inter / (area(a) + area(b) - inter)


def crop_agreement(videos: Sequence[pathlib.Path], variants: Sequence[str]
                   ) -> List[Dict[str, Any]]:
  """How far the crops of each variant (``"2"``, ``"4"``: ``detect_every``; ``"centre"``:
  the frame's centre square) are from those of detection on every frame, over the clips of
  ``videos`` that detection on every frame keeps: IoU of the crop boxes (mean, 5th percentile,
  minimum), mean absolute pixel difference of the 224² crops, and clips kept differently."""
  from havic_jax.media.faces import (NoFaceError, centre_detector, crop_faces,
                                     interpolated_boxes, keyframes, mtcnn_detector,
                                     nearest_detected, process_detector, scaled_box)
  mtcnn = process_detector(mtcnn_detector)
  recorded = [clip for video in videos for clip in _recorded_clips(video, mtcnn)]
  centre = centre_detector()
  results = []
  for variant in variants:
    ious, diffs, changed, compared = [], [], 0, 0
    for frames, boxes in recorded:
      height, width = frames.shape[1:3]
      try:
        reference, _ = crop_faces(frames, _replay(boxes))
      except NoFaceError:
        continue  # a clip the preparation drops
      compared += 1
      if variant == "centre":
        other = [centre(frame) for frame in frames]
        detect, every = centre, 1
      else:
        every = int(variant)
        chosen = keyframes(len(frames), every)
        other = interpolated_boxes(len(frames), chosen.tolist(), [boxes[i] for i in chosen])
        detect = _replay([boxes[i] for i in chosen])
      try:
        crops, _ = crop_faces(frames, detect, detect_every=every)
      except NoFaceError:
        changed += 1
        continue
      ious += [box_iou(scaled_box(a, width, height), scaled_box(b, width, height))
               for a, b in zip(nearest_detected(boxes), nearest_detected(other))]
      diffs.append(np.abs(crops.astype(np.int16) - reference).mean())
    results.append({"stage": "agreement", "variant": variant, "clips": compared,
                    "clips_changed": changed, "iou_mean": float(np.mean(ious)),
                    "iou_p5": float(np.percentile(ious, 5)), "iou_min": float(np.min(ious)),
                    "pixel_mad": float(np.mean(diffs))})
  return results
