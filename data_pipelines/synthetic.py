"""A small synthetic talking-face corpus laid out like FakeAVCeleb v1.2 (spec §14).

  python -m data_pipelines.synthetic --output=/tmp/synth --videos=8 [--seed=0] [--duration=4]

writes `DIR/FakeAVCeleb/<type>/<race>/<gender>/<id>/<file>.mp4` (H.264 + AAC) and
`DIR/FakeAVCeleb/meta_data.csv`. Faces are the sample photographs that ship with scikit-image
and matplotlib, recoloured, flipped and zoomed into more identities; each frame carries a dark
mouth ellipse whose opening follows the audio's RMS at that frame. The audio is a few harmonics
of a slowly drifting, identity-specific pitch, amplitude-modulated by syllables and pauses.
Fakes break the pairing the way FakeAVCeleb's do: another identity's voice (or the same voice
shifted in time) under a real face, another identity's face driven by the real voice, or both.
"""

import csv
import dataclasses
import os
import pathlib
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tqdm
from absl import app, flags

from havic_jax import cli

MIN_DURATION_S = 3.2  # one HAVIC clip (spec §1)
FLAGS = flags.FLAGS
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
                       hue_shift=(0.05 * variant) % 1.0, flip=variant % 2 == 1,
                       zoom=(1.0, 0.92, 1.08)[(variant // 2) % 3])
    identities.append(Identity(id=f"id{index + 1:05d}", race=RACES[rng.integers(len(RACES))],
                               gender=GENDERS[rng.integers(len(GENDERS))],
                               pitch_hz=float(rng.uniform(100.0, 220.0)), face=face))
  return identities


def syllable_envelope(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
  """float32 [round(seconds * sample_rate)] in [0, 1]: raised-cosine syllables at 3–6 Hz."""
  num_samples = int(round(seconds * sample_rate))
  envelope = np.zeros(num_samples, np.float32)
  start = rng.uniform(0.0, 0.15)
  while start < seconds:
    if rng.random() < 0.15:
      start += rng.uniform(0.2, 0.5)  # a pause between words
      continue
    length = 1.0 / rng.uniform(3.0, 6.0)
    first, last = int(start * sample_rate), min(int((start + length) * sample_rate), num_samples)
    phase = (np.arange(first, last) / sample_rate - start) / length
    envelope[first:last] = rng.uniform(0.4, 1.0) * np.sin(np.pi * phase) ** 2
    start += length + rng.uniform(0.0, 0.05)
  return envelope


def speech_like_audio(rng: np.random.Generator, seconds: float, sample_rate: int,
                      pitch_hz: float) -> np.ndarray:
  """float32 [round(seconds * sample_rate)] waveform in [-1, 1] that sounds vaguely voiced.

  Five harmonics (amplitude 1/k) of a pitch drifting ±12% around `pitch_hz`, multiplied by
  `syllable_envelope`, peak 0.5, plus white noise of standard deviation 0.005.
  """
  envelope = syllable_envelope(rng, seconds, sample_rate)
  t = np.arange(envelope.size) / sample_rate
  pitch = pitch_hz * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t
                                          + rng.uniform(0, 2 * np.pi)))
  phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
  voice = sum(np.sin(k * phase) / k for k in range(1, 6))
  voice *= 0.5 / np.max(np.abs(voice))
  audio = envelope * voice + rng.normal(0.0, 0.005, envelope.size)
  return np.clip(audio, -1.0, 1.0).astype(np.float32)


def envelope_per_frame(audio: np.ndarray, sample_rate: int, fps: float,
                       num_frames: int) -> np.ndarray:
  """float32 [num_frames] RMS of `audio` over each video frame's 1/fps s, divided by its maximum."""
  edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
  rms = np.array([np.sqrt(np.mean(np.square(audio[a:b], dtype=np.float64))) if b > a else 0.0
                  for a, b in zip(edges[:-1], edges[1:])])
  return (rms / max(rms.max(), 1e-12)).astype(np.float32)


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
                  frame_size: int = FRAME_SIZE) -> np.ndarray:
  """uint8 [F, frame_size, frame_size, 3] talking-face frames.

  Args:
    face: uint8 [C, C, 3] face canvas (C = frame_size + 2 * CANVAS_MARGIN_PX), mouth at MOUTH_XY.
    opening: [F] mouth opening per frame in [0, 1] (0 closed, 1 fully open).
    motion: int [F, 2] head (dx, dy) per frame in pixels, |d| <= CANVAS_MARGIN_PX.
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
    top, left = CANVAS_MARGIN_PX + dy, CANVAS_MARGIN_PX + dx
    frames[index] = np.round(drawn[top:top + frame_size, left:left + frame_size])
  return frames


def write_mp4(path: os.PathLike, frames: np.ndarray, fps: int, audio: Optional[np.ndarray],
              sample_rate: int) -> None:
  """Writes H.264 (yuv420p) + mono AAC to `path`, via a temporary name and an atomic rename.

  Args:
    frames: uint8 [F, H, W, 3] RGB frames (H, W even).
    audio: float32 [S] mono waveform in [-1, 1] at `sample_rate` Hz, or None for a file
      without an audio stream.
  """
  import av
  path = pathlib.Path(path)
  partial = path.with_name(f".{path.name}.partial")
  try:
    with av.open(str(partial), mode="w", format="mp4") as container:
      video = container.add_stream("h264", rate=fps)
      video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
      video.options = {"preset": "veryfast", "crf": "18"}
      sound = None if audio is None else container.add_stream("aac", rate=sample_rate,
                                                              layout="mono")
      for image in frames:
        container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
      container.mux(video.encode())
      if sound is not None:
        samples = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None], format="flt",
                                             layout="mono")
        samples.sample_rate, samples.pts = sample_rate, 0
        container.mux(sound.encode(samples))
        container.mux(sound.encode())
    os.replace(partial, path)
  finally:
    partial.unlink(missing_ok=True)


def plan_corpus(num_videos: int, identities: Sequence[Identity]) -> List[Dict]:
  """Row dicts (META_COLUMNS plus the recipe: face/audio identities, audio shift) for a corpus.

  Videos are spread over TYPES as evenly as possible, RealVideo-RealAudio first.
  Recipe keys: `face` / `face_blend` (identity indices; fsgan blends 30% of the source back in),
  `voice` (identity index of the audio track), `audio_shift_s` (> 0: the track runs ahead of the
  mouth by that long).
  """
  count = len(identities)
  rows = []
  for type_index, type_name in enumerate(TYPES):
    for clip in range(num_videos // 4 + (type_index < num_videos % 4)):
      source = clip % count
      partner = (source + 1 + (clip // count) % (count - 1)) % count
      face, voice, shift, method = source, source, 0.0, "real"
      if type_name == "RealVideo-FakeAudio":
        method = "rtvc"
        if clip % 2 == 0:
          shift = 0.3 + 0.5 * ((clip * 0.37) % 1.0)
        else:
          voice = partner
      elif type_name == "FakeVideo-RealAudio":
        face, method = partner, "faceswap"
      elif type_name == "FakeVideo-FakeAudio":
        face, method = partner, ("faceswap-wav2lip", "fsgan-wav2lip")[clip % 2]
        if (clip // 2) % 2 == 0:
          shift = 0.3 + 0.5 * ((clip * 0.61) % 1.0)
        else:
          voice = partner
      swapped = [identities[i].id for i in sorted({face, voice} - {source})]
      person = identities[source]
      file_name = f"{len(rows):05d}.mp4" if method == "real" else (
          f"{len(rows):05d}_{'_'.join(swapped + [method])}.mp4")
      rows.append({
          "source": person.id, "target1": swapped[0] if swapped else "-", "target2": "-",
          "method": method, "category": CATEGORIES[type_name], "type": type_name,
          "race": person.race, "gender": person.gender, "path": file_name,
          "folder": f"FakeAVCeleb/{type_name}/{person.race}/{person.gender}/{person.id}",
          "source_index": source, "face": face,
          "face_blend": 0.3 if method.startswith("fsgan") else 0.0,
          "voice": voice, "audio_shift_s": round(shift, 3)})
  return rows


def synthesize_video(row: Dict, identities: Sequence[Identity], seed: int, duration: float,
                     fps: int = FPS,
                     sample_rate: int = SAMPLE_RATE) -> Tuple[np.ndarray, np.ndarray]:
  """(uint8 [F, H, W, 3] frames, float32 [S] audio track) for one `plan_corpus` row.

  F = round(duration * fps), S = F * sample_rate / fps; deterministic in (seed, row["path"]).
  The mouth follows the source's own utterance; the track is that utterance, another voice's
  utterance, or the utterance `audio_shift_s` later.
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
  blend = row["face_blend"]
  face = identities[row["face"]].face.astype(np.float32)
  face = np.round((1 - blend) * face + blend * source.face).astype(np.uint8)
  opening = envelope_per_frame(speech[:num_samples], sample_rate, fps, num_frames)
  frames = render_frames(face, opening, head_motion(rng, num_frames, fps),
                         frame_size=face.shape[0] - 2 * CANVAS_MARGIN_PX)
  return frames, track


def write_meta_data(path: os.PathLike, rows: Sequence[Dict]) -> None:
  """FakeAVCeleb `meta_data.csv`: the nine-name header plus a trailing comma, ten-value rows."""
  path = pathlib.Path(path)
  partial = path.with_name(f".{path.name}.partial")
  with open(partial, "w", newline="") as file:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(META_COLUMNS[:-1] + ("",))
    writer.writerows([row[column] for column in META_COLUMNS] for row in rows)
  os.replace(partial, path)


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


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  started = time.time()
  rows = generate_corpus(FLAGS.output, FLAGS.videos, FLAGS.seed, FLAGS.duration, progress=True)
  per_type = ", ".join(f"{sum(r['type'] == t for r in rows)} {t}" for t in TYPES)
  print(f"wrote {len(rows)} videos ({per_type}) of {FLAGS.duration:g} s to "
        f"{pathlib.Path(FLAGS.output) / 'FakeAVCeleb'} in {time.time() - started:.1f} s")


def define_flags() -> None:
  flags.DEFINE_string("output", None,
                      "Directory to write FakeAVCeleb/ (videos, meta_data.csv) in.")
  flags.DEFINE_integer("videos", None, "Total videos across the four FakeAVCeleb types.",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes the same corpus.")
  flags.DEFINE_float("duration", 4.0, "Length of each video in seconds.",
                     lower_bound=MIN_DURATION_S)
  flags.mark_flags_as_required(["output", "videos"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
