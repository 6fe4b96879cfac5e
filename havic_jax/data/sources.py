"""Dataset readers: the videos of LRS2, VoxCeleb2, FakeAVCeleb or a CSV, with labels and splits.

Each reader walks a dataset's native layout (spec §14) and returns :class:`VideoEntry` items in
a fixed (sorted) order, so preparation, sharding and splits are reproducible. Labels are
1 = fake, 0 = real.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from havic_jax.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FAKEAVCELEB_TRAIN_FRACTION = 0.7  # spec §11: 70 % train / 30 % test
FAKEAVCELEB_SPLIT_SEED = 0
FAKEAVCELEB_META = "meta_data.csv"
# Leave-one-out categories (spec §14): FS = faceswap, GAN = fsgan, WL = wav2lip.
LEAVE_ONE_OUT_CATEGORIES = ("RVFA", "FVRA-WL", "FVFA-FS", "FVFA-GAN", "FVFA-WL")
CSV_COLUMNS = ("video_path", "overall_label", "audio_label", "visual_label", "category",
               "generator")


class DatasetError(UserError):
  """A dataset directory or list that does not have the expected layout."""


@dataclasses.dataclass(frozen=True)
class VideoEntry:
  """One source video. path: absolute file path; video_id: path relative to the dataset root
  (unique); labels: 1 = fake; category: e.g. ``real``, ``RVFA``, ``FVFA-WL``; identity:
  speaker/subject id or ""; method: the generator or manipulation method ("" if real or
  unknown); splits: the split names the video belongs to."""

  path: str
  video_id: str
  audio_label: int
  visual_label: int
  overall_label: int
  category: str = "real"
  identity: str = ""
  method: str = ""
  splits: Tuple[str, ...] = ()


def videos_under(root: pathlib.Path) -> List[pathlib.Path]:
  """Video files (VIDEO_SUFFIXES) anywhere under ``root``, sorted."""
  return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def _require_dir(root: pathlib.Path, what: str) -> None:
  if not root.is_dir():
    raise DatasetError(f"{root}: not a directory; expected {what}")


def read_lrs2(root: str) -> List[VideoEntry]:
  """LRS2: ``main/<show>/<clip>.mp4`` (splits from ``train.txt``/``val.txt``/``test.txt``, whose
  lines start with ``<show>/<clip>``) and ``pretrain/<show>/<clip>.mp4`` (split ``pretrain``).
  All real; no speaker ids."""
  base = pathlib.Path(root)
  _require_dir(base, "LRS2's main/ (and pretrain/) folders")
  membership: Dict[str, List[str]] = {}
  for split in ("train", "val", "test"):
    listing = base / f"{split}.txt"
    if listing.is_file():
      for line in listing.read_text().splitlines():
        if line.strip():
          membership.setdefault(f"main/{line.split()[0]}", []).append(split)
  entries = []
  for folder in ("main", "pretrain"):
    if not (base / folder).is_dir():
      continue
    for path in videos_under(base / folder):
      video_id = path.relative_to(base).as_posix()
      splits = ("pretrain",) if folder == "pretrain" else tuple(
          membership.get(video_id.rsplit(".", 1)[0], ["unlisted"]))
      entries.append(VideoEntry(str(path), video_id, 0, 0, 0, splits=splits))
  if not entries:
    raise DatasetError(f"{base}: no videos under main/ or pretrain/")
  return entries


def read_voxceleb2(root: str) -> List[VideoEntry]:
  """VoxCeleb2: ``<split>/mp4/<speaker_id>/<youtube_id>/<clip>.mp4`` with split ``dev`` or
  ``test``; the speaker id is the identity. All real."""
  base = pathlib.Path(root)
  _require_dir(base, "VoxCeleb2's dev/mp4/ (and test/mp4/) folders")
  entries = []
  for split in ("dev", "test"):
    folder = base / split / "mp4"
    if not folder.is_dir():
      continue
    for path in videos_under(folder):
      relative = path.relative_to(folder).parts
      entries.append(VideoEntry(str(path), path.relative_to(base).as_posix(), 0, 0, 0,
                                identity=relative[0], splits=(split,)))
  if not entries:
    raise DatasetError(f"{base}: no videos under dev/mp4/ or test/mp4/")
  return entries


def fakeavceleb_category(type_name: str, method: str) -> str:
  """The leave-one-out category of a FakeAVCeleb video: ``real``, ``RVFA``, ``FVRA-WL``,
  ``FVRA-FS``, ``FVRA-GAN``, ``FVFA-FS``, ``FVFA-GAN`` or ``FVFA-WL``.

  ``type_name`` is the folder (``RealVideo-FakeAudio`` …); the manipulation comes from
  ``method`` (``faceswap`` -> FS, ``fsgan`` -> GAN, otherwise ``wav2lip`` -> WL)."""
  kinds = {"RealVideo-RealAudio": "real", "RealVideo-FakeAudio": "RVFA",
           "FakeVideo-RealAudio": "FVRA", "FakeVideo-FakeAudio": "FVFA"}
  if type_name not in kinds:
    raise DatasetError(f"not a FakeAVCeleb type folder: {type_name!r}")
  kind = kinds[type_name]
  if kind in ("real", "RVFA"):
    return kind
  if "faceswap" in method:
    return f"{kind}-FS"
  if "fsgan" in method:
    return f"{kind}-GAN"
  if "wav2lip" in method:
    return f"{kind}-WL"
  raise DatasetError(f"FakeAVCeleb method {method!r} names no known face manipulation")


def fakeavceleb_splits(entries: Sequence[VideoEntry], seed: int = FAKEAVCELEB_SPLIT_SEED,
                       train_fraction: float = FAKEAVCELEB_TRAIN_FRACTION,
                       by: str = "video") -> List[VideoEntry]:
  """Assigns the seeded 70/30 split and the five leave-one-out splits.

  ``by="video"`` draws the train videos at random (the paper's protocol); ``by="identity"``
  draws source identities so no person is in both parts. Splits: ``train``/``test``, and per
  leave-one-out category C: ``loo-C-train`` (train part without C's videos) and ``loo-C-test``
  (the test part's real videos and every video of C, none of which is trained on).
  """
  if by not in ("video", "identity"):
    raise ValueError(f"split by 'video' or 'identity', got {by!r}")
  keys = sorted({e.video_id if by == "video" else e.identity for e in entries})
  order = np.random.default_rng(seed).permutation(len(keys))
  train_keys = {keys[i] for i in order[:int(round(train_fraction * len(keys)))]}
  assigned = []
  for entry in entries:
    is_train = (entry.video_id if by == "video" else entry.identity) in train_keys
    splits = ["train" if is_train else "test"]
    for category in LEAVE_ONE_OUT_CATEGORIES:
      if entry.category == category:
        splits.append(f"loo-{category}-test")
      elif is_train:
        splits.append(f"loo-{category}-train")
      elif entry.category == "real":
        splits.append(f"loo-{category}-test")
    assigned.append(dataclasses.replace(entry, splits=tuple(splits)))
  return assigned


def fakeavceleb_meta(root: str) -> Optional[pathlib.Path]:
  """``meta_data.csv`` of the FakeAVCeleb directory ``root`` (or of ``root/FakeAVCeleb``), or
  None when neither has one."""
  for base in (pathlib.Path(root), pathlib.Path(root) / "FakeAVCeleb"):
    if (base / FAKEAVCELEB_META).is_file():
      return base / FAKEAVCELEB_META
  return None


def read_fakeavceleb(root: str, seed: int = FAKEAVCELEB_SPLIT_SEED, split_by: str = "video"
                     ) -> List[VideoEntry]:
  """FakeAVCeleb v1.2 from its ``meta_data.csv`` (spec §14): ten values per row, the ninth the
  file name, the tenth the folder relative to the dataset's parent. Labels come from the
  ``type`` folder name; ``root`` is the ``FakeAVCeleb`` directory (or its parent)."""
  meta = fakeavceleb_meta(root)
  if meta is None:
    raise DatasetError(f"{pathlib.Path(root) / FAKEAVCELEB_META}: missing; a FakeAVCeleb "
                       f"directory holds {FAKEAVCELEB_META}")
  base = meta.parent
  entries = []
  with open(meta, newline="") as file:
    rows = list(csv.reader(file))
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    if len(row) < 10:
      raise DatasetError(f"{meta}:{line}: {len(row)} values; FakeAVCeleb rows have ten")
    source, method, type_name, file_name, folder = row[0], row[3], row[5], row[8], row[9]
    video, audio = type_name.split("-") if "-" in type_name else ("", "")
    path = base.parent / folder / file_name
    video_id = path.relative_to(base).as_posix()
    visual_label, audio_label = int(video == "FakeVideo"), int(audio == "FakeAudio")
    entries.append(VideoEntry(str(path), video_id, audio_label, visual_label,
                              int(audio_label or visual_label),
                              fakeavceleb_category(type_name, method), source, method))
  if not entries:
    raise DatasetError(f"{meta}: no rows")
  return fakeavceleb_splits(sorted(entries, key=lambda e: e.video_id), seed, by=split_by)


def read_csv(path: str) -> List[VideoEntry]:
  """A CSV with header ``video_path,overall_label[,audio_label,visual_label,category,
  generator]`` (KoDF, HiFi-AVDF, own lists). Relative paths are taken from the CSV's folder;
  missing audio/visual labels default to the overall label; the split is ``all``."""
  listing = pathlib.Path(path)
  if not listing.is_file():
    raise DatasetError(f"{listing}: not a file; expected a CSV with columns {CSV_COLUMNS}")
  with open(listing, newline="") as file:
    reader = csv.DictReader(file)
    missing = {"video_path", "overall_label"} - set(reader.fieldnames or ())
    if missing:
      raise DatasetError(f"{listing}: missing column(s) {sorted(missing)}; "
                         f"the header must start with video_path,overall_label")
    entries = []
    for line, row in enumerate(reader, start=2):
      try:
        overall = int(row["overall_label"])
        audio = int(row.get("audio_label") or overall)
        visual = int(row.get("visual_label") or overall)
      except ValueError as error:
        raise DatasetError(f"{listing}:{line}: labels must be 0 or 1 ({error})") from error
      video = pathlib.Path(row["video_path"])
      video = video if video.is_absolute() else listing.parent / video
      category = row.get("category") or ("fake" if overall else "real")
      entries.append(VideoEntry(str(video), row["video_path"], audio, visual, overall,
                                category, "", row.get("generator") or "", ("all",)))
  return entries


def read_folder(root: str) -> List[VideoEntry]:
  """Every video under ``root`` (``VIDEO_SUFFIXES``), as real videos without identities in
  split ``all``: e.g. AudioSet-style clips for out-of-domain pretraining."""
  directory = pathlib.Path(root)
  _require_dir(directory, "a folder of videos")
  videos = videos_under(directory)
  if not videos:
    raise DatasetError(f"{directory}: no video files ({', '.join(VIDEO_SUFFIXES)}) under it")
  return [VideoEntry(str(v), str(v.relative_to(directory)), 0, 0, 0, splits=("all",))
          for v in videos]


READERS: Dict[str, Callable[[str], List[VideoEntry]]] = {
    "lrs2": read_lrs2,
    "voxceleb2": read_voxceleb2,
    "fakeavceleb": read_fakeavceleb,
    "csv": read_csv,
    "folder": read_folder,
}
