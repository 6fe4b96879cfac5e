"""Face tracks: IoU, greedy association, gap filling, spurious tracks, crops, and two synthetic
faces followed by the real MTCNN detector."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from havic_jax.data import synthetic
from havic_jax.media.faces import mtcnn_multi_detector
from havic_jax.media.tracking import detect_tracks, iou, track_crops, track_faces

FACE_PX = 128             # side of each synthetic face, pixels
VIDEO_FRAMES = 10
VIDEO_HEIGHT, VIDEO_WIDTH = 192, 384
CENTRE_TOLERANCE_PX = 0.15 * FACE_PX  # detected box centre to the face's centre


def test_iou_against_hand_computed_values():
  square = (0, 0, 10, 10)
  assert iou(square, square) == 1.0
  assert iou(square, (5, 0, 15, 10)) == pytest.approx(50 / 150)
  assert iou(square, (2, 2, 6, 6)) == pytest.approx(16 / 100)
  assert iou(square, (5, 5, 20, 25)) == pytest.approx(25 / (100 + 300 - 25))
  assert iou(square, (10, 0, 20, 10)) == 0.0  # touching edges
  assert iou(square, (30, 30, 40, 40)) == 0.0
  assert iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0  # empty boxes


def accelerating_box(frame):
  """An 80×100 box whose x grows with frame² (so interpolation differs from the motion)."""
  return (100.0 + frame ** 2, 50.0 + frame, 180.0 + frame ** 2, 150.0 + frame)


def test_gaps_are_interpolated_and_ends_held():
  seen = [1, 2, 6, 7, 8]  # 5 of 10 frames: missing 0, 3–5 and 9
  small = (400.0, 40.0, 430.0, 80.0)  # a smaller face detected in every frame
  frames_boxes = [([accelerating_box(f)] if f in seen else []) + [small] for f in range(10)]
  big, little = track_faces(frames_boxes)  # largest first
  np.testing.assert_array_equal(big.detected, np.isin(np.arange(10), seen))
  np.testing.assert_array_equal(little.detected, np.ones(10, bool))
  np.testing.assert_array_equal(little.boxes, np.tile(small, (10, 1)))
  expected = {f: accelerating_box(f) for f in seen}
  expected[0] = accelerating_box(1)  # held before the first detection
  expected[9] = accelerating_box(8)  # and after the last
  start, end = np.array(accelerating_box(2)), np.array(accelerating_box(6))
  for f in (3, 4, 5):
    weight = (f - 2) / (6 - 2)
    expected[f] = tuple((1 - weight) * start + weight * end)
  assert expected[4][0] == 120.0  # halfway from x0 = 104 to 136, not the true 116
  np.testing.assert_allclose(big.boxes, [expected[f] for f in range(10)], rtol=0, atol=1e-12)
  assert big.boxes.shape == (10, 4) and big.boxes.dtype == np.float64


def test_identities_survive_shuffled_detection_order():
  """Two boxes overlapping each other (IoU 1/3, above the threshold) moving right side by side,
  a third static one; each frame's detections listed in each of the six orders in turn."""
  truths = [[(6.0 * f, 0.0, 40.0 + 6 * f, 40.0) for f in range(8)],
            [(20.0 + 6 * f, 0.0, 60.0 + 6 * f, 40.0) for f in range(8)],
            [(200.0, 100.0, 230.0, 130.0)] * 8]
  ordered = [[truth[f] for truth in truths] for f in range(8)]
  orders = list(itertools.permutations(range(3)))[::-1]  # (2, 1, 0) first
  shuffled = [[boxes[i] for i in orders[f % len(orders)]] for f, boxes in enumerate(ordered)]
  for frames_boxes in (ordered, shuffled):
    tracks = track_faces(frames_boxes)
    assert len(tracks) == 3
    for track in tracks:
      truth = next(t for t in truths if t[0] == tuple(track.boxes[0]))
      np.testing.assert_array_equal(track.boxes, truth)
      assert track.detected.all()


def test_greedy_association_prefers_the_highest_overlap():
  # Frame 1 has two detections over one track: the exact match joins it, the other starts a
  # new track (a track takes one detection per frame) even though it is listed first.
  tracks = track_faces([[(0, 0, 100, 100)], [(10, 0, 110, 105), (0, 0, 100, 100)]],
                       min_detected_fraction=0.0)
  both = next(t for t in tracks if t.detected.all())
  np.testing.assert_array_equal(both.boxes, [(0, 0, 100, 100)] * 2)
  assert len(tracks) == 2
  # One detection over two tracks: it joins the one it overlaps more (IoU 0.90 > 0.74), once.
  tracks = track_faces([[(0, 0, 100, 100), (20, 0, 120, 100)], [(15, 0, 115, 100)]],
                       min_detected_fraction=0.0)
  assert [t.detected.tolist() for t in tracks] == [[True, False], [True, True]]
  np.testing.assert_array_equal(tracks[1].boxes, [(20, 0, 120, 100), (15, 0, 115, 100)])
  np.testing.assert_array_equal(tracks[0].boxes, [(0, 0, 100, 100)] * 2)
  # Below the IoU threshold a detection starts a track of its own.
  assert len(track_faces([[(0, 0, 10, 10)], [(5, 0, 15, 10)]], iou_threshold=0.5,
                         min_detected_fraction=0.0)) == 2
  with pytest.raises(ValueError, match="iou_threshold"):
    track_faces([], iou_threshold=0.0)  # would join boxes that do not overlap at all


def test_spurious_tracks_are_dropped():
  steady = (10.0, 10.0, 60.0, 70.0)
  half = (200.0, 10.0, 240.0, 60.0)
  frames_boxes = [[steady] + ([(300.0, 100.0, 320.0, 120.0)] if f == 4 else [])
                  + ([half] if f % 2 else []) for f in range(10)]
  tracks = track_faces(frames_boxes)  # default: detected in at least half of the frames
  assert len(tracks) == 2  # the one-frame detection is gone; 5 of 10 frames is enough
  np.testing.assert_array_equal(tracks[0].boxes, np.tile(steady, (10, 1)))
  np.testing.assert_array_equal(tracks[1].detected, np.arange(10) % 2 == 1)
  assert len(track_faces(frames_boxes, min_detected_fraction=0.6)) == 1
  everything = track_faces(frames_boxes, min_detected_fraction=0.0)
  assert len(everything) == 3
  np.testing.assert_array_equal(everything[2].detected, np.arange(10) == 4)
  assert track_faces([]) == [] and track_faces([[], []]) == []


def test_crops_follow_each_track():
  """A red 60×60 block and a blue 40×40 one drifting on grey; each track's crops show its own
  colour in every frame."""
  frames = np.full((6, 120, 240, 3), 100, np.uint8)
  frames_boxes = []
  for f in range(6):
    red, blue = (20 + 3 * f, 30, 80 + 3 * f, 90), (170 - 2 * f, 40 + f, 210 - 2 * f, 80 + f)
    frames[f, red[1]:red[3], red[0]:red[2]] = (255, 0, 0)
    frames[f, blue[1]:blue[3], blue[0]:blue[2]] = (0, 0, 255)
    frames_boxes.append([blue, red])
  red_track, blue_track = track_faces(frames_boxes)  # largest first
  for track, colour in ((red_track, 0), (blue_track, 2)):
    crops = track_crops(frames, track, size=64)
    assert crops.shape == (6, 64, 64, 3) and crops.dtype == np.uint8
    # The ×1.3 box: the block fills the central 1/1.3 of every crop, grey around it.
    centre = crops[:, 32 - 20:32 + 20, 32 - 20:32 + 20].reshape(6, -1, 3)
    assert (centre[..., colour] == 255).all() and (centre[..., 1] == 0).all()
    assert (crops[:, :3, :3] == 100).all()
    means = crops.reshape(6, -1, 3).mean(axis=1)
    assert (means[:, colour] > means[:, 2 - colour] + 100).all()


def two_face_video():
  """uint8 [F, 192, 384, 3]: two different synthetic talking faces (FACE_PX square) on grey,
  drifting towards each other by 2 px a frame, and their (x, y) top-left corners [F, 2, 2]."""
  faces = [synthetic.render_frames(identity.face, np.linspace(0, 1, VIDEO_FRAMES),
                                   np.zeros((VIDEO_FRAMES, 2), int), frame_size=FACE_PX)
           for identity in synthetic.make_identities(2, seed=0, frame_size=FACE_PX)]
  frames = np.full((VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH, 3), 90, np.uint8)
  corners = np.zeros((VIDEO_FRAMES, 2, 2), int)
  for f in range(VIDEO_FRAMES):
    corners[f] = (24 + 2 * f, 32 + f), (VIDEO_WIDTH - 24 - FACE_PX - 2 * f, 32 - f)
    for (x, y), face in zip(corners[f], faces):
      frames[f, y:y + FACE_PX, x:x + FACE_PX] = face[f]
  return frames, corners


def test_mtcnn_tracks_two_faces_without_switching():
  frames, corners = two_face_video()
  detect = mtcnn_multi_detector()
  assert detect(np.zeros_like(frames[0])) == []
  assert len(detect(frames[0])) == 2
  tracks = detect_tracks(frames, detect)
  assert len(tracks) == 2
  left, right = sorted(tracks, key=lambda t: t.boxes[0, 0])
  face_centres = corners + FACE_PX / 2  # [F, 2 faces, (x, y)]
  for track, face in ((left, 0), (right, 1)):
    assert track.detected.all()
    box_centres = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
    distance = np.abs(box_centres - face_centres[:, face]).max(axis=1)
    assert (distance < CENTRE_TOLERANCE_PX).all(), distance
  assert (left.boxes[:, 2] < right.boxes[:, 0]).all()
