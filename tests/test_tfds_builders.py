"""TFDS builders: the clips equal the plain preparation's, splits follow the readers, labels
follow the FakeAVCeleb type folders, bad videos are skipped, and neither building nor reading
imports TensorFlow."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import tfds_builders
from havic_jax.data import prepare, records, sources, synthetic
from havic_jax.media.faces import mtcnn_detector, process_detector

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAME = "havic_fake_av_celeb"
CORPUS_VIDEOS = 4  # one of each FakeAVCeleb type, one clip each
# A `tensorflow` package put first on a subprocess's path: any attempt to import TensorFlow,
# even one that catches the ImportError, leaves the marker file behind.
TENSORFLOW_STUB = """import os
open(os.environ["TF_IMPORT_MARKER"], "a").write("tensorflow imported\\n")
raise ImportError("TensorFlow must not be needed to build or read the HAVIC TFDS datasets")
"""
# Reads every clip of every split of the datasets in argv[1:]; prints [{split: clips}, ...].
READ_EVERY_SPLIT = """import json, sys
import tensorflow_datasets as tfds
counts = []
for data_dir in sys.argv[1:]:
  builder = tfds.builder("havic_fake_av_celeb", data_dir=data_dir)
  per_split = {}
  for split in builder.info.splits:
    source = tfds.data_source("havic_fake_av_celeb", data_dir=data_dir, split=split)
    clips = [source[i] for i in range(len(source))]
    assert all(clip["frames"].shape == (16, 224, 224, 3) for clip in clips)
    per_split[split] = len(clips)
  counts.append(per_split)
assert "tensorflow" not in sys.modules
print(json.dumps(counts))
"""


def expected_split_sizes(entries):
  """{TFDS split: clips} for videos of one clip each."""
  sizes = {}
  for entry in entries:
    for split in entry.splits:
      name = tfds_builders.tfds_split_name(split)
      sizes[name] = sizes.get(name, 0) + 1
  return sizes


def read_split(data_dir, split):
  source = tfds.data_source(NAME, data_dir=str(data_dir), split=split)
  return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def corpus(synthetic_corpus, tmp_path_factory):
  """(directory holding FakeAVCeleb/, meta_data.csv rows): the first video of each FakeAVCeleb
  type of the shared synthetic corpus."""
  with open(synthetic_corpus / "FakeAVCeleb" / "meta_data.csv", newline="") as file:
    rows = [dict(zip(synthetic.META_COLUMNS, row)) for row in list(csv.reader(file))[1:]]
  chosen = [next(row for row in rows if row["type"] == kind) for kind in synthetic.TYPES]
  root = tmp_path_factory.mktemp("tfds_corpus")
  for row in chosen:
    (root / row["folder"]).mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_corpus / row["folder"] / row["path"], root / row["folder"])
  synthetic.write_meta_data(root / "FakeAVCeleb" / "meta_data.csv", chosen)
  return root, chosen


@pytest.fixture(scope="module")
def data_dir(corpus, tmp_path_factory):
  """TFDS data directory with havic_fake_av_celeb built from the corpus."""
  out = tmp_path_factory.mktemp("tfds_data")
  tfds_builders.build(NAME, str(corpus[0]), str(out))
  return out


def test_names():
  assert set(tfds_builders.BUILDERS) == {
      "havic_fake_av_celeb", "havic_lrs2", "havic_voxceleb2", "havic_csv"}
  assert tfds_builders.tfds_split_name("loo-FVRA-WL-train") == "loo_FVRA_WL_train"
  assert tfds_builders.tfds_split_name("train") == "train"
  assert tfds_builders.tfds_split_name("all") == "full"


def test_splits_follow_the_reader(corpus, data_dir):
  entries = sources.read_fakeavceleb(str(corpus[0]))
  builder = tfds.builder(NAME, data_dir=str(data_dir))
  assert builder.info.file_format.value == "array_record"
  assert {split: info.num_examples for split, info in builder.info.splits.items()} == (
      expected_split_sizes(entries))
  train, test = read_split(data_dir, "train"), read_split(data_dir, "test")
  assert len(train) + len(test) == CORPUS_VIDEOS
  for split, clips in (("train", train), ("test", test)):
    assert sorted(clip["video_id"].decode() for clip in clips) == sorted(
        e.video_id for e in entries if split in e.splits)


def test_clips_equal_plain_preparation(corpus, data_dir):
  root, rows = corpus
  entries = {e.video_id: e for e in sources.read_fakeavceleb(str(root))}
  row_of = {f"{row['folder'].split('/', 1)[1]}/{row['path']}": row for row in rows}
  detect = process_detector(mtcnn_detector)
  clips = read_split(data_dir, "train") + read_split(data_dir, "test")
  assert sorted(clip["video_id"].decode() for clip in clips) == sorted(row_of)
  for clip in clips:
    video_id = clip["video_id"].decode()
    encoded, _ = prepare.video_records(entries[video_id], detect,
                                       prepare.PrepareOptions(frame_encoding="raw"))
    assert len(encoded) == 1
    expected = records.decode(encoded[0])
    assert clip["frames"].shape == (16, 224, 224, 3) and clip["frames"].dtype == np.uint8
    assert clip["audio"].shape == (51200,) and clip["audio"].dtype == np.int16
    np.testing.assert_array_equal(clip["frames"], expected.frames)
    assert clip["audio"].tobytes() == expected.audio.tobytes()
    labels = synthetic.labels_from_type(row_of[video_id]["type"])
    assert (clip["audio_label"], clip["visual_label"], clip["overall_label"]) == (
        int(labels["audio_fake"]), int(labels["video_fake"]), int(labels["fake"]))
    assert clip["category"].decode() == entries[video_id].category
    assert clip["identity"].decode() == row_of[video_id]["source"]
    assert clip["clip_start"] == pytest.approx(expected.clip_start)


def test_command_skips_a_corrupt_video_without_tensorflow(corpus, data_dir, tmp_path):
  broken = tmp_path / "corpus"
  shutil.copytree(corpus[0], broken)
  entries = sources.read_fakeavceleb(str(broken))
  corrupt = next(e for e in entries if "train" in e.splits)
  pathlib.Path(corrupt.path).write_bytes(b"not a video " * 100)
  stub = tmp_path / "stub" / "tensorflow"
  stub.mkdir(parents=True)
  (stub / "__init__.py").write_text(TENSORFLOW_STUB)
  marker = tmp_path / "tensorflow_imported"
  env = dict(os.environ, TF_IMPORT_MARKER=str(marker), PYTHONPATH=os.pathsep.join(
      [str(tmp_path / "stub"), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  out = tmp_path / "data"
  built = subprocess.run(
      [sys.executable, "-m", "data_pipelines.tfds_builders", f"--dataset={NAME}",
       f"--manual_dir={broken}", f"--data_dir={out}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-3000:]
  assert corrupt.video_id in built.stderr  # logged as skipped
  read = subprocess.run([sys.executable, "-c", READ_EVERY_SPLIT, str(data_dir), str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert read.returncode == 0, read.stderr[-3000:]
  assert not marker.exists(), "TensorFlow was imported"
  complete, without_corrupt = json.loads(read.stdout)
  assert complete == expected_split_sizes(entries)
  assert without_corrupt == expected_split_sizes([e for e in entries if e is not corrupt])
  assert without_corrupt["train"] + without_corrupt["test"] == CORPUS_VIDEOS - 1


def test_csv_list(corpus, tmp_path):
  video = sorted(corpus[0].rglob("*.mp4"))[0]
  manual_dir = tmp_path / "list"
  manual_dir.mkdir()
  (manual_dir / tfds_builders.CSV_LIST_NAME).write_text(
      f"video_path,overall_label\n{video},1\n")
  builder = tfds_builders.build("havic_csv", str(manual_dir), str(tmp_path / "data"))
  assert {split: info.num_examples for split, info in builder.info.splits.items()} == {"full": 1}
  clip = tfds.data_source("havic_csv", data_dir=str(tmp_path / "data"), split="full")[0]
  assert (clip["audio_label"], clip["visual_label"], clip["overall_label"]) == (1, 1, 1)
  assert clip["category"] == b"fake" and clip["video_id"] == str(video).encode()
