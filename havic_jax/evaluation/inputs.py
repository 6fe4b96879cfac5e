"""Window inputs of the videos the eval binary scores: raw files decoded, cut into 16-frame
windows at 5 fps with a 0.4 s hop (``havic_jax.media.windows``), face-cropped and featurised on
worker processes; prepared shards read one window per stored clip.

A video that cannot be read, or has no face or no audio, gets a status (``reports.STATUSES``)
instead of raising: one bad file never stops a benchmark run.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import pathlib
import tempfile
import traceback
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from havic_jax import storage
from havic_jax.data import records
from havic_jax.data.examples import ClipTransform, resize_frames
from havic_jax.evaluation.videos import EvalData, EvalVideo
from havic_jax.media import decode, fbank, reencode, tracking, windows
from havic_jax.media.faces import mtcnn_detector, mtcnn_multi_detector, process_detector
from havic_jax.models.config import ModelConfig

PREPARED_STATUS = {"unreadable": "unreadable", "error": "error"}  # other reasons: "rejected"


@dataclasses.dataclass
class WindowInputs:
  """A video's model inputs, or why it has none. video uint8 [n, 16, S, S, 3]; audio float32
  [n, audio_frames, mel_bins]; starts [n] s; head: the logit scored ("overall" or "video");
  tracks: [n] face track of each window (face-track scoring), else None."""

  status: str
  detail: str = ""
  video: Optional[np.ndarray] = None
  audio: Optional[np.ndarray] = None
  starts: Optional[np.ndarray] = None
  head: str = "overall"
  tracks: Optional[np.ndarray] = None


def _track_windows(media: Any, plan: windows.WindowPlan, size: int
                   ) -> Optional[List[np.ndarray]]:
  """Per face track (two or more people on screen), the uint8 [n, 16, size, size, 3] windows of
  its crops; None when at most one face track is found."""
  frames = media.frames[plan.frame_indices]
  tracks = tracking.detect_tracks(frames, process_detector(mtcnn_multi_detector))
  if len(tracks) < 2:
    return None
  per_track = []
  for track in tracks:
    crops = tracking.track_crops(frames, track, size)
    if plan.padded:
      crops = crops[plan.window_frames[0]]
    per_track.append(crops[plan.window_frames])
  return per_track


def raw_video_inputs(task: Tuple[str, ModelConfig, float, bool, Optional[str], bool, int]
                     ) -> WindowInputs:
  """Decodes, re-encodes (robustness), cuts and featurises one raw video (a local file or a
  ``gs://`` object); never raises."""
  path, model_config, max_seconds, no_audio, condition, face_tracks, detect_every = task
  try:
    with storage.local_copy(path) as local:
      if condition is not None:
        with tempfile.TemporaryDirectory() as scratch:
          copy = pathlib.Path(scratch) / "reencoded.mp4"
          reencode.reencode(local, copy, reencode.CONDITIONS[condition])
          media = decode.read_media(copy)
      else:
        media = decode.read_media(local)
  except (decode.MediaError, OSError) as error:
    return WindowInputs("unreadable",
                        f"{path}: {error}" if storage.is_remote(path) else str(error))
  try:
    cut = windows.extract_windows(media, process_detector(mtcnn_detector), max_seconds,
                                  detect_every=detect_every)
    crops = resize_frames(cut.crops, model_config.image_size)  # once: windows overlap
    video = crops[cut.plan.window_frames]
    status, head = cut.status, "overall"
    if cut.audio is None or no_audio:
      audio = np.zeros((len(video), model_config.audio_frames, model_config.mel_bins), np.float32)
      head = "video"
      if cut.audio is None:
        status = "no_audio"
    else:
      audio = np.stack([fbank.audio_features(wave, model_config.audio_frames, model_config.mel_bins)
                        for wave in cut.audio])
    detail = (f"a face in {int(cut.faces_detected.sum())} of {len(cut.faces_detected)} sampled "
              f"frames" if status in ("partial_face", "no_face") else "")
    starts, tracks = cut.plan.starts.astype(np.float64), None
    per_track = _track_windows(media, cut.plan, model_config.image_size) if face_tracks else None
    if per_track is not None:
      detail = f"{len(per_track)} face tracks; {detail}".rstrip("; ")
      tracks = np.repeat(np.arange(len(per_track)), len(video))
      video = np.concatenate(per_track)
      audio, starts = np.tile(audio, (len(per_track), 1, 1)), np.tile(starts, len(per_track))
    return WindowInputs(status, detail, video, audio, starts, head, tracks)
  except Exception as error:  # pylint: disable=broad-except
    # One bad file must never stop a benchmark run: report it and go on.
    return WindowInputs("error", f"{type(error).__name__}: {error} "
                        f"{traceback.format_exc(limit=3)!r}")


def _prepared_inputs(video: EvalVideo, source: Any, transform: ClipTransform,
                     no_audio: bool) -> WindowInputs:
  """The stored clips of a prepared video, one window each (starts from the clip records)."""
  if video.rejected:
    reason = video.rejected.split(":")[0]
    return WindowInputs(PREPARED_STATUS.get(reason, "rejected"),
                        f"rejected when prepared: {video.rejected}")
  first, count = video.records
  clips = [records.decode(source[first + i]) for i in range(count)]
  examples = [transform(clip, None) for clip in clips]
  starts = np.array([clip.clip_start for clip in clips], np.float64)
  audio = np.stack([e["audio"] for e in examples])
  if no_audio:
    audio = np.zeros_like(audio)
  return WindowInputs("ok", "", np.stack([e["video"] for e in examples]), audio, starts,
                      "video" if no_audio else "overall")


def window_inputs(videos: Sequence[EvalVideo], data: EvalData, model_config: ModelConfig,
                  max_seconds: float, no_audio: bool, condition: Optional[str], workers: int,
                  face_tracks: bool = False, detect_every: int = 1) -> Iterator[WindowInputs]:
  """Window inputs of ``videos`` in order; raw files are decoded on ``workers`` processes (0:
  in this process). ``face_tracks``: windows of every face track when several people are on
  screen (raw videos only; prepared clips hold one face). ``detect_every``: the face detector
  runs on every k-th sampled frame and the last, boxes in between interpolated
  (``windows.extract_windows``; raw videos only, prepared clips were cropped when prepared)."""
  if detect_every < 1:
    raise ValueError(f"detect_every must be at least 1, got {detect_every}")
  if data.kind == "prepared":
    if condition is not None:
      raise ValueError("the robustness protocol re-encodes video files; give --data the raw "
                       "videos (a CSV or a FakeAVCeleb directory), not prepared shards")
    transform = ClipTransform(model_config, "eval")
    source = data.prepared.source()
    for video in videos:
      yield _prepared_inputs(video, source, transform, no_audio)
    return
  tasks = [(v.path, model_config, max_seconds, no_audio, condition, face_tracks, detect_every)
           for v in videos]
  if workers <= 0:
    yield from map(raw_video_inputs, tasks)
    return
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield from pool.imap(raw_video_inputs, tasks)
