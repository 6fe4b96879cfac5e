"""TensorFlow Datasets builders of the HAVIC datasets: the clips of ``data_pipelines.prepare``
as TFDS ArrayRecord files that read back as NumPy arrays without TensorFlow.

Build (DIR holds the raw dataset as the builder's MANUAL_DOWNLOAD_INSTRUCTIONS say; OUT is a
TFDS data directory, default ``~/tensorflow_datasets``):

  python -m data_pipelines.tfds_builders --dataset=havic_fake_av_celeb --manual_dir=DIR \
      --data_dir=OUT

or ``build("havic_fake_av_celeb", DIR, OUT)`` from Python. The other datasets are
``havic_lrs2``, ``havic_voxceleb2`` and ``havic_csv``. ``havic_voxceleb2`` and ``havic_lrs2``
(whose videos are each in one split) build as Beam datasets when Beam options are given
(``--beam_options="--runner=DirectRunner --direct_num_workers=2"``, or a DataflowRunner's;
the ``[beam]`` extra): each split's generator is then a Beam ``PTransform`` that reads the
split's video list (a JSON-lines file in the build's download directory, deleted after the
build) and extracts the clips of each video on the workers, the same clips as the plain
build. The files are ArrayRecord. TFDS's own ``tfds build`` (and ``python -m
tensorflow_datasets.scripts.cli.main build``) imports TensorFlow on start-up, so it only runs
where TensorFlow is installed; there the equivalent is
``tfds build havic_fake_av_celeb --imports=data_pipelines.tfds_builders --manual_dir=DIR
--data_dir=OUT --file_format=array_record`` (the script form ``tfds build
data_pipelines/tfds_builders.py`` accepts only a module with a single builder).

Read, without TensorFlow and without importing this module:

  import tensorflow_datasets as tfds
  clips = tfds.data_source("havic_fake_av_celeb", data_dir=OUT, split="train")
  clip = clips[0]  # a dict, see clip_features()

Every video is decoded, cut into clips and face-cropped by ``prepare.process_video`` (raw
frames, so no JPEG loss) and read back with ``records.decode``: the frames and audio are
exactly those of the plain preparation CLI with ``--frame_encoding=raw``. A video that yields no
clip (corrupt, no audio, no face, too short, or any error) is logged and left out.

Splits are the reader's split names with ``-`` replaced by ``_`` (TFDS file names use ``-`` as
a separator): FakeAVCeleb has ``train``, ``test`` and ``loo_<C>_train`` / ``loo_<C>_test`` per
leave-one-out category C (e.g. ``loo_FVRA_WL_test``), with the seeded 70/30 split of
``havic_jax.data.sources`` (seed 0, by video); LRS2 has ``train``, ``val``, ``test``, ``pretrain``
(and ``unlisted``); VoxCeleb2 has ``dev`` and ``test``; a CSV list has ``full`` (the reader's
``all``, a name TFDS reserves for the union of all splits). A split whose videos were all
left out is not written. Splits may share videos (every FakeAVCeleb video is in ``train`` or
``test`` and in five leave-one-out splits); each video is processed once per build, but its
clips are stored once per split that holds it.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import json
import pathlib
import pickle
import shlex
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import app, flags, logging

from havic_jax.data.prepare import PrepareOptions, process_video
from havic_jax import cli
from havic_jax.data import sources, records
from havic_jax.data.sources import VideoEntry
from havic_jax.media.decode import CLIP_SECONDS, FRAMES_PER_CLIP, SAMPLE_RATE
from havic_jax.media.faces import CROP_SIZE

FILE_FORMAT = "array_record"  # random access, read without TensorFlow
CLIP_SAMPLES = int(round(CLIP_SECONDS * SAMPLE_RATE))  # 51200
LABEL_NAMES = ("real", "fake")  # label 0 = real, 1 = fake
RENAMED_SPLITS = {"all": "full"}  # TFDS reserves "all" for the union of the splits
CSV_LIST_NAME = "videos.csv"  # the list havic_csv reads from its manual directory
CLIP_OPTIONS = PrepareOptions(frame_encoding="raw")  # every clip of a video, lossless frames
BEAM_LISTING_SUFFIX = "_videos.jsonl"  # a Beam build's list of a split's videos (deleted after)
FLAGS = flags.FLAGS


def tfds_split_name(split: str) -> str:
  """The TFDS split of a reader's split name: ``-`` -> ``_``, ``all`` -> ``full``
  (e.g. ``loo-FVRA-WL-train`` -> ``loo_FVRA_WL_train``)."""
  return RENAMED_SPLITS.get(split, split).replace("-", "_")


def clip_examples(video_id: str, encoded: Sequence[bytes]
                  ) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """(``"<video_id>:<clip index>"``, :func:`clip_features` values) of a video's serialised
  clip records."""
  for index, data in enumerate(encoded):
    clip = records.decode(data)
    yield f"{video_id}:{index}", {
        "frames": clip.frames, "audio": clip.audio, "audio_label": clip.audio_label,
        "visual_label": clip.visual_label, "overall_label": clip.overall_label,
        "category": clip.category, "identity": clip.identity, "video_id": clip.video_id,
        "clip_start": np.float32(clip.clip_start)}


def video_examples(line: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
  """The :func:`clip_examples` of one video of a Beam build's list (a JSON line of
  ``beam_prepare.entry_fields``); a rejected video yields none (logged)."""
  from havic_jax.data.beam import entry_from_fields
  entry = entry_from_fields(json.loads(line))
  yield from clip_examples(entry.video_id, process_video(entry, CLIP_OPTIONS).records)


def clip_features() -> tfds.features.FeaturesDict:
  """The features of one example (one 3.2 s clip), as ``tfds.data_source`` returns them:

  frames: uint8 ndarray [16, 224, 224, 3] RGB face crops (stored zlib-compressed); audio: int16
  ndarray [51200] (3.2 s at 16 kHz); audio_label / visual_label / overall_label: int class
  labels, 0 = real, 1 = fake; category, identity, video_id: UTF-8 bytes (identity may be
  empty); clip_start: float, seconds from the start of the video (stored as float32).
  """
  return tfds.features.FeaturesDict({
      "frames": tfds.features.Tensor(shape=(FRAMES_PER_CLIP, CROP_SIZE, CROP_SIZE, 3),
                                     dtype=np.uint8, encoding="zlib"),
      "audio": tfds.features.Tensor(shape=(CLIP_SAMPLES,), dtype=np.int16, encoding="bytes"),
      "audio_label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "visual_label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "overall_label": tfds.features.ClassLabel(names=LABEL_NAMES),
      "category": tfds.features.Text(),
      "identity": tfds.features.Text(),
      "video_id": tfds.features.Text(),
      "clip_start": tfds.features.Scalar(dtype=np.float32),
  })


class ClipStore:
  """The serialised clip records of each video of a build, kept in ``directory`` so that a
  video is decoded and face-cropped once however many splits hold it."""

  def __init__(self, directory: str):
    self._directory = pathlib.Path(directory)
    self._clip_counts: Dict[str, int] = {}

  def _path(self, entry: VideoEntry) -> pathlib.Path:
    return self._directory / f"{hashlib.sha1(entry.video_id.encode()).hexdigest()}.pickle"

  def add(self, entry: VideoEntry) -> int:
    """Extracts and stores the clips of ``entry``; returns their number, 0 when the video
    is rejected (logged by ``prepare.process_video``, never raised)."""
    encoded = process_video(entry, CLIP_OPTIONS).records
    if encoded:
      self._path(entry).write_bytes(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL))
    self._clip_counts[entry.video_id] = len(encoded)
    return len(encoded)

  def clips(self, entry: VideoEntry) -> List[bytes]:
    """The serialised records (``records.encode``, raw frames) that :meth:`add` stored."""
    if not self._clip_counts.get(entry.video_id):
      return []
    return pickle.loads(self._path(entry).read_bytes())


class HavicBuilder(tfds.core.GeneratorBasedBuilder):
  """The base of the HAVIC builders: a subclass reads its dataset's videos; this class turns
  them into clip examples with one split per split name. Construct builders with
  ``file_format="array_record"`` (as :func:`build` does): TFDS's default, TFRecord, needs
  TensorFlow to read."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Clips of data_pipelines.prepare (raw frames), one per example."}
  HOMEPAGE: Optional[str] = None
  BEAM = False  # whether Beam options make this builder's generators Beam PTransforms
  _clip_store: Optional[ClipStore] = None  # set while the builder prepares the dataset
  _scratch: Optional[pathlib.Path] = None  # the download directory, during a Beam build

  @abc.abstractmethod
  def _read_videos(self, manual_dir: pathlib.Path) -> List[VideoEntry]:
    """The dataset's videos in ``manual_dir`` with labels and split names, in a fixed order."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=inspect.getdoc(type(self)),
                                 features=clip_features(), homepage=self.HOMEPAGE)

  def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                            download_config: tfds.download.DownloadConfig) -> None:
    # The clip store lives beside the downloads for the whole build and is deleted after it.
    scratch = pathlib.Path(dl_manager.download_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    if self.BEAM and (download_config.beam_options or download_config.beam_runner):
      self._scratch = scratch
      try:
        super()._download_and_prepare(dl_manager, download_config)
      finally:
        self._scratch = None
        for listing in scratch.glob(f"{self.name}_*{BEAM_LISTING_SUFFIX}"):
          listing.unlink()
      return
    with tempfile.TemporaryDirectory(prefix=f"{self.name}_clips_", dir=scratch) as directory:
      self._clip_store = ClipStore(directory)
      try:
        super()._download_and_prepare(dl_manager, download_config)
      finally:
        self._clip_store = None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> Dict[str, Iterator[Tuple[str, Dict[str, Any]]]]:
    """Extracts the clips of every video once, then one generator per non-empty split (a Beam
    build: one PTransform per split, extracting on the workers)."""
    entries = self._read_videos(pathlib.Path(dl_manager.manual_dir))
    if self._scratch is not None:
      return self._beam_generators(entries)
    kept: List[VideoEntry] = []
    num_clips = 0
    for entry in tqdm.tqdm(entries, desc="videos", unit="video"):
      count = self._clip_store.add(entry)
      if count:
        kept.append(entry)
        num_clips += count
    logging.info("%s: %d clips from %d of %d videos", self.name, num_clips, len(kept),
                 len(entries))
    videos_per_split: Dict[str, List[VideoEntry]] = {}
    for entry in kept:
      for split in entry.splits:
        videos_per_split.setdefault(tfds_split_name(split), []).append(entry)
    empty = {tfds_split_name(s) for e in entries for s in e.splits} - set(videos_per_split)
    if empty:
      logging.warning("%s: no usable video in split(s) %s; not written", self.name,
                      sorted(empty))
    return {split: self._generate_examples(videos)
            for split, videos in videos_per_split.items()}

  def _generate_examples(self, videos: List[VideoEntry]
                         ) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(``"<video_id>:<clip index>"``, clip_features() values) of every clip of ``videos``."""
    for entry in videos:
      yield from clip_examples(entry.video_id, self._clip_store.clips(entry))

  def _beam_generators(self, entries: Sequence[VideoEntry]) -> Dict[str, Any]:
    """{split: Beam PTransform of its (key, example) pairs}: each split's videos are listed
    in a JSON-lines file under the download directory, read and spread over the workers,
    and every worker extracts the clips of its videos (:func:`video_examples`)."""
    import apache_beam as beam  # the [beam] extra
    from havic_jax.data.beam import entry_fields, read_listing
    videos_per_split: Dict[str, List[VideoEntry]] = {}
    for entry in entries:
      for split in entry.splits:
        videos_per_split.setdefault(tfds_split_name(split), []).append(entry)
    generators = {}
    for split, videos in videos_per_split.items():
      listing = self._scratch / f"{self.name}_{split}{BEAM_LISTING_SUFFIX}"
      listing.write_text("".join(json.dumps(entry_fields(e)) + "\n" for e in videos))
      generators[split] = (beam.Create([str(listing)])
                           | f"List_{split}" >> beam.FlatMap(read_listing)
                           | f"Spread_{split}" >> beam.Reshuffle()
                           | f"Clips_{split}" >> beam.FlatMap(video_examples))
    return generators


class HavicFakeAVCeleb(HavicBuilder):
  """FakeAVCeleb v1.2 as 3.2 s face-cropped clips with audio, visual and overall fake labels,
  its leave-one-out category and the source identity; splits: the seeded 70/30 train/test
  split and the leave-one-out splits."""

  HOMEPAGE = "https://github.com/DASH-Lab/FakeAVCeleb"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Request FakeAVCeleb v1.2 from its authors (https://github.com/DASH-Lab/FakeAVCeleb) and
  unpack it so that the manual directory holds `FakeAVCeleb/meta_data.csv` and
  `FakeAVCeleb/<type>/<race>/<gender>/<id>/<file>.mp4` (the `folder` column of
  meta_data.csv is relative to the manual directory); the `FakeAVCeleb` directory itself may
  be passed instead.
  """

  def _read_videos(self, manual_dir: pathlib.Path) -> List[VideoEntry]:
    return sources.read_fakeavceleb(str(manual_dir))


class HavicLrs2(HavicBuilder):
  """LRS2 (BBC talking faces, all real) as 3.2 s face-cropped clips; splits from the list
  files, plus pretrain."""

  BEAM = True
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs2.html"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download LRS2 (https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs2.html) and unpack it
  so that the manual directory holds `main/<show>/<clip>.mp4`, `pretrain/<show>/<clip>.mp4`
  (optional) and the split lists `train.txt`, `val.txt`, `test.txt`.
  """

  def _read_videos(self, manual_dir: pathlib.Path) -> List[VideoEntry]:
    return sources.read_lrs2(str(manual_dir))


class HavicVoxceleb2(HavicBuilder):
  """VoxCeleb2 (celebrity interviews, all real) as 3.2 s face-cropped clips with the speaker
  id as identity; splits dev and test."""

  BEAM = True
  HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download VoxCeleb2 (https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html) and unpack it
  so that the manual directory holds `dev/mp4/<speaker_id>/<youtube_id>/<clip>.mp4` and
  `test/mp4/<speaker_id>/<youtube_id>/<clip>.mp4`.
  """

  def _read_videos(self, manual_dir: pathlib.Path) -> List[VideoEntry]:
    return sources.read_voxceleb2(str(manual_dir))


class HavicCsv(HavicBuilder):
  """The videos of a CSV list (KoDF, HiFi-AVDF or one's own) as 3.2 s face-cropped clips with
  the list's labels; one split, full."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Put the list in the manual directory as `{CSV_LIST_NAME}`, with header
  `video_path,overall_label[,audio_label,visual_label,category,generator]` (labels 1 = fake);
  relative video paths are taken from the manual directory.
  """

  def _read_videos(self, manual_dir: pathlib.Path) -> List[VideoEntry]:
    return sources.read_csv(str(manual_dir / CSV_LIST_NAME))


BUILDERS = {builder.name: builder
            for builder in (HavicFakeAVCeleb, HavicLrs2, HavicVoxceleb2, HavicCsv)}


def build(name: str, manual_dir: str, data_dir: Optional[str] = None,
          beam_options: str = "") -> tfds.core.DatasetBuilder:
  """Builds dataset ``name`` (a key of BUILDERS, e.g. ``havic_fake_av_celeb``) from the raw
  data in ``manual_dir`` into ``data_dir`` (None: TFDS's default, ``~/tensorflow_datasets``)
  as ArrayRecord files; returns the builder. A dataset already built there is kept.

  beam_options: Beam pipeline options as one command-line string; given, the builders with
  ``BEAM`` (havic_voxceleb2, havic_lrs2) build through a Beam pipeline (the others ignore
  it)."""
  if name not in BUILDERS:
    raise ValueError(f"dataset must be one of {sorted(BUILDERS)}, got {name!r}")
  builder = BUILDERS[name](data_dir=data_dir, file_format=FILE_FORMAT)
  config = {}
  if beam_options:
    from apache_beam.options.pipeline_options import PipelineOptions  # the [beam] extra
    config["beam_options"] = PipelineOptions(shlex.split(beam_options))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, **config))
  return builder


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  started = time.time()
  builder = build(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.beam_options)
  splits = ", ".join(f"{split} {info.num_examples}" for split, info in builder.info.splits.items())
  print(f"{builder.name} -> {builder.data_dir} ({time.time() - started:.1f} s); clips per "
        f"split: {splits}")


def define_flags() -> None:
  flags.DEFINE_enum("dataset", None, sorted(BUILDERS), "TFDS name of the dataset to build.")
  flags.DEFINE_string("manual_dir", None, "Directory holding the raw dataset (see the "
                      "builder's MANUAL_DOWNLOAD_INSTRUCTIONS).")
  flags.DEFINE_string("data_dir", None, "TFDS data directory the dataset is written to "
                      "(default: ~/tensorflow_datasets).")
  flags.DEFINE_string("beam_options", "", "Build havic_voxceleb2 / havic_lrs2 with an Apache "
                      "Beam pipeline with these options (one command-line string, e.g. "
                      "\"--runner=DirectRunner --direct_num_workers=2 "
                      "--direct_running_mode=multi_processing\"; needs the [beam] extra). "
                      "Default: in this process, no Beam.")
  flags.mark_flags_as_required(["dataset", "manual_dir"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
