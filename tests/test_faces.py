"""Face crops: box arithmetic, nearest-frame filling, rejection, and the real detector."""

import numpy as np
import pytest
import skimage.data

from havic_jax.media.faces import (NoFaceError, crop_faces, mtcnn_detector, nearest_detected,
                                   scaled_box)


def test_scaled_box_grows_about_the_centre_and_clips():
  assert scaled_box((100, 100, 200, 140), 640, 480) == (85, 94, 215, 146)
  assert scaled_box((0, 0, 100, 100), 640, 480) == (0, 0, 115, 115)  # clipped, not shifted
  assert scaled_box((600, 450, 640, 480), 640, 480) == (594, 446, 640, 480)


def test_missing_boxes_come_from_the_nearest_detected_frame():
  a, b = (0, 0, 1, 1), (5, 5, 6, 6)
  assert nearest_detected([None, a, None, None, b, None]) == [a, a, a, b, b, b]
  with pytest.raises(NoFaceError):
    nearest_detected([None, None])


def boxed_frames(num_frames, present):
  """Grey frames with a white 40×60 block at x 100..140, y 50..110 where ``present``."""
  frames = np.full((num_frames, 240, 320, 3), 60, np.uint8)
  frames[np.asarray(present), 50:110, 100:140] = 255
  return frames


def block_detector(frame):
  ys, xs = np.nonzero(frame[..., 0] == 255)
  return None if len(xs) == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_crops_are_resized_scaled_boxes_and_fill_missing_frames():
  present = [True, False, True, True]
  crops, detected = crop_faces(boxed_frames(4, present), block_detector)
  assert crops.shape == (4, 224, 224, 3) and crops.dtype == np.uint8
  np.testing.assert_array_equal(detected, present)
  # ×1.3 box: the block fills the central 1/1.3 of the crop in both directions.
  centre = crops[0, 112 - 60:112 + 60, 112 - 60:112 + 60, 0]
  assert centre.min() == 255
  assert crops[0, :10, :10, 0].max() < 100  # the margin is background
  # The frame without a face is cropped with its neighbour's box (so shows background).
  assert crops[1].mean() < 100 and crops[1].shape == (224, 224, 3)


def test_clip_rejected_when_too_few_frames_have_a_face():
  with pytest.raises(NoFaceError, match="a face in 1 of 4 frames"):
    crop_faces(boxed_frames(4, [False, False, True, False]), block_detector)


def test_mtcnn_finds_the_astronaut_face():
  image = skimage.data.astronaut()  # 512×512, face near (225, 115)
  detect = mtcnn_detector()
  x0, y0, x1, y1 = detect(image)
  assert 170 < x0 < 200 and 40 < y0 < 80 and 250 < x1 < 290 and 150 < y1 < 200
  assert detect(np.zeros_like(image)) is None
