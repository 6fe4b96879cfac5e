"""A small synthetic talking-face corpus laid out like FakeAVCeleb v1.2 (spec §14).

  python -m data_pipelines.synthetic --output=/tmp/synth --videos=8 [--seed=0] [--duration=4]

writes `DIR/FakeAVCeleb/<type>/<race>/<gender>/<id>/<file>.mp4` (H.264 + AAC) and
`DIR/FakeAVCeleb/meta_data.csv`. Faces are the sample photographs that ship with scikit-image
and matplotlib, recoloured, flipped and zoomed into more identities; each frame carries a dark
mouth ellipse whose opening follows the audio's RMS at that frame. The audio is a few harmonics
of a slowly drifting, identity-specific pitch, amplitude-modulated by syllables and pauses
(``havic_jax.data.synthetic_audio``).
Fakes break the pairing the way FakeAVCeleb's do: another identity's voice (or the same voice
shifted in time) under a real face, another identity's face swapped in, a re-synthesised mouth,
or both. Each generator leaves the kind of trace its real counterpart does, so a detector has
something local to find as well as the audio-visual mismatch: face swaps (`faceswap`, `fsgan`)
paste a softer, tone-shifted, flickering inner face over the source's head, lip sync (`wav2lip`)
repaints the mouth box at low resolution in a varying tone, and voice cloning (`rtvc`) adds
vocoder hiss while it speaks.
"""

import csv
import dataclasses
import os
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tqdm

from havic_jax import storage
from havic_jax.data.synthetic_audio import envelope_per_frame, speech_like_audio, vocoder_trace
from havic_jax.media.reencode import write_video

MIN_DURATION_S = 3.2  # one HAVIC clip (spec §1)
SYNTHETIC_CRF = 18  # H.264 quality of the corpus: visually lossless
FPS = 25
SAMPLE_RATE = 16_000
FRAME_SIZE = 224

TYPES = ("RealVideo-RealAudio", "RealVideo-FakeAudio", "FakeVideo-RealAudio",
         "FakeVideo-FakeAudio")
CATEGORIES = {"RealVideo-RealAudio": "A", "RealVideo-FakeAudio": "B",
              "FakeVideo-RealAudio": "C", "FakeVideo-FakeAudio": "D"}
META_COLUMNS = ("source", "target1", "target2", "method", "category", "type", "race", "gender",
                "path", "folder")  # the header names the first nine; the tenth is unnamed
RACES = ("African", "Asian (East)", "Asian (South)", "Caucasian (American)",
         "Caucasian (European)")
GENDERS = ("men", "women")

# Mouth centre as a fraction of the face canvas (x, y); every face crop puts the mouth there.
MOUTH_XY = (0.5, 0.65)
MOUTH_HALF_WIDTH = 0.10  # fraction of the frame size
MOUTH_HALF_HEIGHT = (0.012, 0.07)  # closed, fully open; fraction of the frame size
MOUTH_RGB = (50, 15, 20)
HEAD_MOTION_PX = 3  # largest head displacement, pixels
CANVAS_MARGIN_PX = HEAD_MOTION_PX + 3  # face canvas border the head motion moves into

# Generator traces in the picture (fractions of the face canvas; resolution divisors; brightness
# factors); the cloned voice's hiss is in ``synthetic_audio``.
SWAP_CENTRE_XY = (0.5, 0.55)     # centre of the swapped inner-face ellipse
SWAP_HALF_AXES = (0.28, 0.36)    # its half width and half height
SWAP_DOWNSCALE = 2               # the swapped face is rendered at 1/2 resolution
SWAP_TONE = 1.25                 # and 25 % brighter than the head around it
SWAP_FLICKER = 0.2               # its brightness flickers frame to frame by U(−20 %, +20 %)
FSGAN_SOURCE_BLEND = 0.3         # fsgan blends 30 % of the source face back in
LIPSYNC_DOWNSCALE = 4            # wav2lip repaints the mouth box at 1/4 resolution
LIPSYNC_TONE = (0.6, 0.9)        # and darker by a factor drawn per frame

# Identity variants of a photograph: mirrored or not, three zooms, then small hue shifts (turns
# of the colour wheel; larger ones give faces the face detector no longer finds).
VARIANT_ZOOMS = (1.0, 0.92, 1.08)
VARIANT_HUES = (0.0, 0.04, -0.04, 0.08, -0.08)

# Sample photographs: (loader name, mouth centre (x, y) in pixels, face crop side in pixels).
_PHOTOS = (("astronaut", (222, 145), 220), ("grace_hopper", (265, 277), 300))


@dataclasses.dataclass(frozen=True)
class Identity:
  """One synthetic person: a face canvas, a voice pitch and FakeAVCeleb's race/gender folders."""
  id: str
  race: str
  gender: str
  pitch_hz: float
  face: np.ndarray  # uint8 [C, C, 3], C = frame size + 2 * CANVAS_MARGIN_PX, mouth at MOUTH_XY


def labels_from_type(type_name: str) -> Dict[str, bool]:
  """Fake flags derived from a FakeAVCeleb `type` folder name, e.g. `RealVideo-FakeAudio`."""
  video, audio = type_name.split("-")
  if video not in ("RealVideo", "FakeVideo") or audio not in ("RealAudio", "FakeAudio"):
    raise ValueError(f"not a FakeAVCeleb type: {type_name!r}")
  video_fake, audio_fake = video == "FakeVideo", audio == "FakeAudio"
  return {"video_fake": video_fake, "audio_fake": audio_fake,
          "fake": video_fake or audio_fake}


def _photo(name: str) -> np.ndarray:
  """uint8 [H, W, 3] sample photograph shipped with scikit-image or matplotlib."""
  if name == "astronaut":
    import skimage.data
    return skimage.data.astronaut()
  import matplotlib.cbook
  import matplotlib.image
  with matplotlib.cbook.get_sample_data(f"{name}.jpg") as file:
    return np.asarray(matplotlib.image.imread(file, format="jpg"))[..., :3]


def face_canvas(photo: np.ndarray, mouth_xy: Tuple[float, float], side_px: float,
                canvas_px: int, hue_shift: float = 0.0, flip: bool = False,
                zoom: float = 1.0) -> np.ndarray:
  """Square face crop of `photo`, resized to uint8 [canvas_px, canvas_px, 3].

  The crop (side `side_px / zoom` pixels of the photo) puts `mouth_xy` at MOUTH_XY of the canvas;
  `hue_shift` (fraction of the colour wheel) and `flip` (mirror left-right) make new identities.
  """
  import skimage.color
  import skimage.transform
  side = side_px / zoom
  pad = int(np.ceil(side))
  padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
  top = int(round(mouth_xy[1] - MOUTH_XY[1] * side)) + pad
  left = int(round(mouth_xy[0] - MOUTH_XY[0] * side)) + pad
  crop = padded[top:top + int(round(side)), left:left + int(round(side))]
  canvas = skimage.transform.resize(crop, (canvas_px, canvas_px), anti_aliasing=True)
  if hue_shift:
    hsv = skimage.color.rgb2hsv(canvas)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 1.0
    canvas = skimage.color.hsv2rgb(hsv)
  if flip:
    canvas = canvas[:, ::-1]
  return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)


def make_identities(count: int, seed: int, frame_size: int = FRAME_SIZE) -> List[Identity]:
  """`count` identities: the sample photographs, then recoloured/flipped/zoomed variants."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
  photos = {name: _photo(name) for name, _, _ in _PHOTOS[:count]}
  identities = []
  for index in range(count):
    name, mouth_xy, side = _PHOTOS[index % len(_PHOTOS)]
    variant = index // len(_PHOTOS)
    face = face_canvas(photos[name], mouth_xy, side, frame_size + 2 * CANVAS_MARGIN_PX,
                       hue_shift=VARIANT_HUES[(variant // 6) % len(VARIANT_HUES)],
                       flip=variant % 2 == 1, zoom=VARIANT_ZOOMS[(variant // 2) % 3])
    identities.append(Identity(id=f"id{index + 1:05d}", race=RACES[rng.integers(len(RACES))],
                               gender=GENDERS[rng.integers(len(GENDERS))],
                               pitch_hz=float(rng.uniform(100.0, 220.0)), face=face))
  return identities


def head_motion(rng: np.random.Generator, num_frames: int, fps: float) -> np.ndarray:
  """int [num_frames, 2] (dx, dy) pixel offsets: slow sinusoidal sway of at most HEAD_MOTION_PX."""
  t = np.arange(num_frames) / fps
  freq, phase = rng.uniform(0.2, 0.7, 2), rng.uniform(0, 2 * np.pi, 2)
  return np.round(HEAD_MOTION_PX * np.sin(2 * np.pi * freq * t[:, None] + phase)).astype(int)


def mouth_region(frame_size: int = FRAME_SIZE) -> Tuple[slice, slice]:
  """(rows, cols) of a frame that hold the mouth at any opening and head position."""
  cx = MOUTH_XY[0] * (frame_size + 2 * CANVAS_MARGIN_PX) - CANVAS_MARGIN_PX
  cy = MOUTH_XY[1] * (frame_size + 2 * CANVAS_MARGIN_PX) - CANVAS_MARGIN_PX
  half_w = MOUTH_HALF_WIDTH * frame_size + HEAD_MOTION_PX + 2
  half_h = MOUTH_HALF_HEIGHT[1] * frame_size + HEAD_MOTION_PX + 2
  return (slice(int(cy - half_h), int(np.ceil(cy + half_h))),
          slice(int(cx - half_w), int(np.ceil(cx + half_w))))


def render_frames(face: np.ndarray, opening: np.ndarray, motion: np.ndarray,
                  frame_size: int = FRAME_SIZE, swap_gains: Optional[np.ndarray] = None,
                  swap_alpha: Optional[np.ndarray] = None,
                  lipsync_tones: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 [F, frame_size, frame_size, 3] talking-face frames.

  Args:
    face: uint8 [C, C, 3] face canvas (C = frame_size + 2 * CANVAS_MARGIN_PX), mouth at MOUTH_XY.
    opening: [F] mouth opening per frame in [0, 1] (0 closed, 1 fully open).
    motion: int [F, 2] head (dx, dy) per frame in pixels, |d| <= CANVAS_MARGIN_PX.
    swap_gains, swap_alpha: [F] brightness factor of the swapped face in each frame, and its
      [C, C, 1] blending mask (`swapped_face`); None for an unswapped face.
    lipsync_tones: [F] darkening of the repainted mouth box per frame (`lipsync_trace`), or
      None when the mouth is not repainted.
  """
  canvas = face.shape[0]
  mouth_x, mouth_y = MOUTH_XY[0] * canvas, MOUTH_XY[1] * canvas
  half_w = MOUTH_HALF_WIDTH * frame_size
  closed, open_ = (h * frame_size for h in MOUTH_HALF_HEIGHT)
  rows = np.arange(canvas)[:, None] + 0.5
  cols = np.arange(canvas)[None, :] + 0.5
  colour = np.array(MOUTH_RGB, np.float32)
  frames = np.empty((len(opening), frame_size, frame_size, 3), np.uint8)
  for index, (amount, (dx, dy)) in enumerate(zip(opening, motion)):
    half_h = closed + float(np.clip(amount, 0.0, 1.0)) * (open_ - closed)
    distance = np.sqrt(((cols - mouth_x) / half_w) ** 2 + ((rows - mouth_y) / half_h) ** 2)
    alpha = np.clip((1.0 - distance) * half_h + 0.5, 0.0, 1.0)[..., None]  # ~1 px soft edge
    drawn = face * (1.0 - alpha) + colour * alpha
    if swap_gains is not None:
      drawn = np.clip(drawn * (1.0 + (swap_gains[index] - 1.0) * swap_alpha), 0, 255)
    top, left = CANVAS_MARGIN_PX + dy, CANVAS_MARGIN_PX + dx
    frames[index] = np.round(drawn[top:top + frame_size, left:left + frame_size])
    if lipsync_tones is not None:
      frames[index] = lipsync_trace(frames[index], lipsync_tones[index])
  return frames


def _resample(image: np.ndarray, divisor: int) -> np.ndarray:
  """float32 image shrunk by `divisor` (area) and enlarged back (linear): a low-res rendering."""
  import cv2
  height, width = image.shape[:2]
  small = cv2.resize(image, (max(1, width // divisor), max(1, height // divisor)),
                     interpolation=cv2.INTER_AREA)
  return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def swapped_face(source: np.ndarray, target: np.ndarray, source_blend: float = 0.0
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 face canvas, float [C, C, 1] blending mask): `target`'s inner face pasted over
  `source`'s head, as a face swap does.

  Inside the SWAP ellipse (soft 2 px edge) the target face is rendered at 1/SWAP_DOWNSCALE
  resolution and SWAP_TONE brighter, with `source_blend` of the source mixed back in (fsgan)."""
  canvas = source.shape[0]
  rows = (np.arange(canvas)[:, None] + 0.5) / canvas
  cols = (np.arange(canvas)[None, :] + 0.5) / canvas
  distance = np.sqrt(((cols - SWAP_CENTRE_XY[0]) / SWAP_HALF_AXES[0]) ** 2
                     + ((rows - SWAP_CENTRE_XY[1]) / SWAP_HALF_AXES[1]) ** 2)
  edge_px = 2.0
  alpha = np.clip((1.0 - distance) * SWAP_HALF_AXES[0] * canvas / edge_px + 0.5, 0, 1)[..., None]
  inner = (1 - source_blend) * target.astype(np.float32) + source_blend * source
  inner = np.clip(_resample(inner, SWAP_DOWNSCALE) * SWAP_TONE, 0, 255)
  return np.round(source * (1 - alpha) + inner * alpha).astype(np.uint8), alpha


def lipsync_trace(frame: np.ndarray, tone: float) -> np.ndarray:
  """uint8 frame with its `mouth_region` at 1/LIPSYNC_DOWNSCALE resolution, times `tone`."""
  rows, cols = mouth_region(frame.shape[0])
  out = frame.copy()
  box = _resample(frame[rows, cols].astype(np.float32), LIPSYNC_DOWNSCALE) * tone
  out[rows, cols] = np.round(np.clip(box, 0, 255))
  return out


def write_mp4(path: os.PathLike, frames: np.ndarray, fps: int, audio: Optional[np.ndarray],
              sample_rate: int) -> None:
  """Writes H.264 (CRF SYNTHETIC_CRF, fast preset) + mono AAC to `path` atomically.

  Args:
    frames: uint8 [F, H, W, 3] RGB frames (H, W even).
    audio: float32 [S] mono waveform in [-1, 1] at `sample_rate` Hz, or None for a file
      without an audio stream.
  """
  write_video(path, frames, fps, audio, sample_rate, crf=SYNTHETIC_CRF, preset="veryfast")


def plan_corpus(num_videos: int, identities: Sequence[Identity]) -> List[Dict]:
  """Row dicts (META_COLUMNS plus the recipe) for a corpus.

  Videos are spread over TYPES as evenly as possible, RealVideo-RealAudio first. Within a type
  the methods take turns: RealVideo-FakeAudio `rtvc`; FakeVideo-RealAudio `faceswap`, `wav2lip`;
  FakeVideo-FakeAudio `faceswap-wav2lip`, `fsgan-wav2lip`, `wav2lip`. Recipe keys:
  `source_index`, `face` (identity whose face is swapped in), `swap` ("", "faceswap" or "fsgan"),
  `lipsync` (mouth repainted to follow the track), `voice` (identity of the track's voice),
  `audio_shift_s` (> 0: the source's own track runs ahead of the mouth by that long) and
  `vocoder` (the track carries vocoder hiss).
  """
  count = len(identities)
  rows = []
  for type_index, type_name in enumerate(TYPES):
    for clip in range(num_videos // 4 + (type_index < num_videos % 4)):
      source = clip % count
      partner = (source + 1 + (clip // count) % (count - 1)) % count
      recipe = {"source_index": source, "face": source, "swap": "", "lipsync": False,
                "voice": source, "audio_shift_s": 0.0, "vocoder": False}
      method = "real"
      fake_audio = type_name.endswith("FakeAudio")
      if type_name == "RealVideo-FakeAudio":
        method = "rtvc"
      elif type_name == "FakeVideo-RealAudio":
        method = ("faceswap", "wav2lip")[clip % 2]
      elif type_name == "FakeVideo-FakeAudio":
        method = ("faceswap-wav2lip", "fsgan-wav2lip", "wav2lip")[clip % 3]
      if fake_audio:
        recipe["vocoder"] = True
        if (clip // (1 if type_name == "RealVideo-FakeAudio" else 3)) % 2 == 0:
          recipe["audio_shift_s"] = round(0.3 + 0.5 * ((clip * 0.37) % 1.0), 3)
        else:
          recipe["voice"] = partner
      if "faceswap" in method or "fsgan" in method:
        recipe.update(face=partner, swap=method.split("-")[0])
      recipe["lipsync"] = "wav2lip" in method
      swapped = [identities[i].id for i in sorted({recipe["face"], recipe["voice"]} - {source})]
      person = identities[source]
      file_name = f"{len(rows):05d}.mp4" if method == "real" else (
          f"{len(rows):05d}_{'_'.join(swapped + [method])}.mp4")
      rows.append({
          "source": person.id, "target1": swapped[0] if swapped else "-", "target2": "-",
          "method": method, "category": CATEGORIES[type_name], "type": type_name,
          "race": person.race, "gender": person.gender, "path": file_name,
          "folder": f"FakeAVCeleb/{type_name}/{person.race}/{person.gender}/{person.id}",
          **recipe})
  return rows


def synthesize_video(row: Dict, identities: Sequence[Identity], seed: int, duration: float,
                     fps: int = FPS,
                     sample_rate: int = SAMPLE_RATE) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 [F, H, W, 3] frames, float32 [S] audio track) for one `plan_corpus` row.

  F = round(duration * fps), S = F * sample_rate / fps; deterministic in (seed, row["path"]).
  The mouth follows the source's own utterance, or the track when it is lip-synced; the track is
  that utterance, another voice's utterance, or the utterance `audio_shift_s` later.
  """
  rng = np.random.default_rng(np.random.SeedSequence([seed, 2, *row["path"].encode()]))
  num_frames = int(round(duration * fps))
  num_samples = int(round(num_frames * sample_rate / fps))
  shift = int(round(row["audio_shift_s"] * sample_rate))
  source = identities[row["source_index"]]
  speech = speech_like_audio(rng, (num_samples + shift) / sample_rate, sample_rate,
                             source.pitch_hz)
  if row["voice"] != row["source_index"]:
    track = speech_like_audio(rng, num_samples / sample_rate, sample_rate,
                              identities[row["voice"]].pitch_hz)
  else:
    track = speech[shift:shift + num_samples]
  face, swap = source.face, {}
  if row["swap"]:
    face, alpha = swapped_face(source.face, identities[row["face"]].face,
                               FSGAN_SOURCE_BLEND if row["swap"] == "fsgan" else 0.0)
    swap = {"swap_alpha": alpha,
            "swap_gains": 1.0 + rng.uniform(-SWAP_FLICKER, SWAP_FLICKER, num_frames)}
  tones = rng.uniform(*LIPSYNC_TONE, num_frames) if row["lipsync"] else None
  driver = track if row["lipsync"] else speech[:num_samples]
  opening = envelope_per_frame(driver, sample_rate, fps, num_frames)
  frames = render_frames(face, opening, head_motion(rng, num_frames, fps),
                         frame_size=face.shape[0] - 2 * CANVAS_MARGIN_PX, lipsync_tones=tones,
                         **swap)
  if row["vocoder"]:
    track = vocoder_trace(rng, track, sample_rate)
  return frames, track


def write_meta_data(path: os.PathLike, rows: Sequence[Dict]) -> None:
  """FakeAVCeleb `meta_data.csv`: the nine-name header plus a trailing comma, ten-value rows;
  written whole (``storage.staged``)."""
  with storage.staged(path) as staging, open(staging, "w", newline="") as file:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(META_COLUMNS[:-1] + ("",))
    writer.writerows([row[column] for column in META_COLUMNS] for row in rows)


def generate_corpus(output_dir: os.PathLike, num_videos: int, seed: int = 0,
                    duration: float = 4.0, progress: bool = False) -> List[Dict]:
  """Writes `num_videos` mp4s and meta_data.csv under `output_dir/FakeAVCeleb`; returns the rows.

  `duration` is each clip's length in seconds (at least MIN_DURATION_S).
  """
  if num_videos < 1:
    raise ValueError(f"num_videos must be positive, got {num_videos}")
  if duration < MIN_DURATION_S:
    raise ValueError(f"duration must be at least {MIN_DURATION_S} s, got {duration}")
  root = pathlib.Path(output_dir)
  identities = make_identities(max(2, (num_videos + 3) // 4), seed)
  rows = plan_corpus(num_videos, identities)
  for row in tqdm.tqdm(rows, desc="videos", unit="video", disable=not progress):
    frames, track = synthesize_video(row, identities, seed, duration)
    folder = root / row["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    write_mp4(folder / row["path"], frames, FPS, track, SAMPLE_RATE)
  write_meta_data(root / "FakeAVCeleb" / "meta_data.csv", rows)
  return rows
