"""Face tracks: every person of a clip followed from frame to frame, so that each can be cropped
and scored separately (the FakeOut protocol scores a video as the maximum over its face tracks).

``track_faces`` links the detections of consecutive frames greedily by overlap: in each frame the
(track, detection) pair of highest IoU is joined first, then the next highest among the tracks
and detections still free, down to ``iou_threshold``; a track is compared through the last box
it was detected with, however many frames ago. A detection left over starts a new track. Inside
a track, frames without a detection get boxes linearly interpolated between the neighbouring
detections, and the first (last) detected box is held before (after) them. Tracks detected in
too few frames are spurious and dropped, with the same rule that rejects a single-face clip
(``faces.MIN_DETECTED_FRACTION`` by default).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from havic_jax.media.faces import (CROP_SIZE, MIN_DETECTED_FRACTION, Box, MultiDetector,
                                   crop_region, scaled_box)

IOU_THRESHOLD = 0.3  # a detection joins a track whose last box it overlaps at least this much


@dataclasses.dataclass
class FaceTrack:
  """One face followed through a clip of F frames.

  boxes: float [F, 4] (x0, y0, x1, y1) pixels in every frame, interpolated where not detected.
  detected: bool [F] whether the box of each frame is a detection of this face.
  """

  boxes: np.ndarray
  detected: np.ndarray


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """float [N, M] intersection over union of boxes a [N, 4] and b [M, 4] ((x0, y0, x1, y1)
  pixels); 0 where the union is empty."""
  a, b = a[:, None], b[None, :]
  width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = width * height
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  union = area_a + area_b - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou(a: Box, b: Box) -> float:
  """Intersection over union of two (x0, y0, x1, y1) pixel boxes, in [0, 1]."""
  return float(pairwise_iou(np.asarray([a], np.float64), np.asarray([b], np.float64))[0, 0])


def _greedy_matches(last: np.ndarray, found: np.ndarray, iou_threshold: float
                    ) -> Dict[int, int]:
  """{detection index: track index} pairing tracks' last boxes last [T, 4] with a frame's
  detections found [D, 4], highest IoU first, each track and detection used once, pairs below
  ``iou_threshold`` left out. Equal IoUs go to the lower track index, then detection index."""
  overlap = pairwise_iou(last, found)
  matches: Dict[int, int] = {}
  for flat in np.argsort(-overlap, axis=None, kind="stable"):
    track, detection = divmod(int(flat), overlap.shape[1])
    if overlap[track, detection] < iou_threshold:
      break
    if detection not in matches and track not in matches.values():
      matches[detection] = track
  return matches


def _filled_boxes(frames: Sequence[int], boxes: np.ndarray, num_frames: int) -> np.ndarray:
  """float [num_frames, 4] boxes of a track detected in ``frames`` (increasing) with boxes
  [len(frames), 4]: linear in the frame index between detections, constant outside them."""
  index = np.arange(num_frames)
  return np.stack([np.interp(index, frames, boxes[:, k]) for k in range(4)], axis=1)


def track_faces(frames_boxes: Sequence[Sequence[Box]], iou_threshold: float = IOU_THRESHOLD,
                min_detected_fraction: float = MIN_DETECTED_FRACTION) -> List[FaceTrack]:
  """Face tracks of a clip from each frame's detections (boxes (x0, y0, x1, y1) in pixels).

  Tracks detected in fewer than ``min_detected_fraction`` of the F frames are dropped; the rest
  come largest first (mean box area over the F frames; earlier-started first on ties). The
  result does not depend on the order of the detections within a frame, barring equal IoUs.
  """
  if not 0 < iou_threshold <= 1:
    raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
  num_frames = len(frames_boxes)
  track_frames: List[List[int]] = []        # per track: the frames it was detected in
  track_boxes: List[List[np.ndarray]] = []  # per track: its detected boxes, float [4] each
  for frame, boxes in enumerate(frames_boxes):
    found = np.asarray(boxes, np.float64).reshape(-1, 4)
    last = np.array([detections[-1] for detections in track_boxes], np.float64).reshape(-1, 4)
    matches = _greedy_matches(last, found, iou_threshold)
    for detection, box in enumerate(found):
      track = matches.get(detection)
      if track is None:
        track = len(track_boxes)
        track_frames.append([])
        track_boxes.append([])
      track_frames[track].append(frame)
      track_boxes[track].append(box)
  tracks = []
  for frames, boxes in zip(track_frames, track_boxes):
    if len(frames) < min_detected_fraction * num_frames:
      continue
    detected = np.zeros(num_frames, bool)
    detected[frames] = True
    tracks.append(FaceTrack(_filled_boxes(frames, np.stack(boxes), num_frames), detected))
  areas = [np.mean((t.boxes[:, 2] - t.boxes[:, 0]) * (t.boxes[:, 3] - t.boxes[:, 1]))
           for t in tracks]
  return [tracks[i] for i in np.argsort(-np.asarray(areas), kind="stable")]


def detect_tracks(frames: np.ndarray, detect: MultiDetector,
                  iou_threshold: float = IOU_THRESHOLD,
                  min_detected_fraction: float = MIN_DETECTED_FRACTION) -> List[FaceTrack]:
  """Face tracks of a clip, frames uint8 [F, H, W, 3] RGB: ``detect`` on every frame, then
  ``track_faces``."""
  return track_faces([detect(frame) for frame in frames], iou_threshold, min_detected_fraction)


def track_crops(frames: np.ndarray, track: FaceTrack, size: int = CROP_SIZE) -> np.ndarray:
  """uint8 [F, size, size, 3] crops of one track from frames uint8 [F, H, W, 3] RGB: each frame's
  box scaled and cropped as for single-face crops (``scaled_box``, ``crop_region``)."""
  height, width = frames.shape[1:3]
  return np.stack([crop_region(frame, scaled_box(tuple(box), width, height), size)
                   for frame, box in zip(frames, track.boxes)])
