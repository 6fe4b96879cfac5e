"""havic_voxceleb2 as a Beam dataset (a real Apache Beam DirectRunner) through the project's build
entry point: the same splits and clips as the plain build."""

import shutil

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import tfds_builders
from havic_jax.data import sources

NAME = "havic_voxceleb2"


@pytest.fixture(scope="module")
def voxceleb2(synthetic_corpus, tmp_path_factory):
  """A VoxCeleb2 layout of three synthetic videos: two speakers in dev, one in test."""
  root = tmp_path_factory.mktemp("voxceleb2")
  videos = sorted((synthetic_corpus / "FakeAVCeleb").rglob("*.mp4"))[:3]
  for index, (split, speaker) in enumerate((("dev", "id00001"), ("dev", "id00002"),
                                            ("test", "id00003"))):
    folder = root / split / "mp4" / speaker / f"yt{index}"
    folder.mkdir(parents=True)
    shutil.copy(videos[index], folder / "00001.mp4")
  return root


def read_all(data_dir):
  builder = tfds.builder(NAME, data_dir=str(data_dir))
  return {split: [source[i] for i in range(len(source))]
          for split in builder.info.splits
          for source in [tfds.data_source(NAME, data_dir=str(data_dir), split=split)]}


def test_beam_build_has_the_plain_builds_clips(voxceleb2, tmp_path):
  assert tfds_builders.HavicVoxceleb2.BEAM and tfds_builders.HavicLrs2.BEAM
  tfds_builders.build(NAME, str(voxceleb2), str(tmp_path / "plain"))
  tfds_builders.build(NAME, str(voxceleb2), str(tmp_path / "beam"),
                      beam_options="--runner=DirectRunner")
  plain, beam = read_all(tmp_path / "plain"), read_all(tmp_path / "beam")
  assert {split: len(clips) for split, clips in beam.items()} == {"dev": 2, "test": 1}
  assert sorted(beam) == sorted(plain)
  for split, clips in plain.items():
    by_id = {clip["video_id"]: clip for clip in beam[split]}
    assert sorted(by_id) == sorted(clip["video_id"] for clip in clips)
    for clip in clips:
      other = by_id[clip["video_id"]]
      assert sorted(other) == sorted(clip)
      for key, value in clip.items():
        np.testing.assert_array_equal(other[key], value, err_msg=key)
  assert {clip["identity"] for clip in beam["dev"]} == {b"id00001", b"id00002"}
  assert not list((tmp_path / "beam").rglob(f"*{tfds_builders.BEAM_LISTING_SUFFIX}"))


def test_beam_generators_are_ptransforms(voxceleb2, tmp_path):
  builder = tfds_builders.HavicVoxceleb2(data_dir=str(tmp_path), file_format="array_record")
  builder._scratch = tmp_path  # as during a build with Beam options
  generators = builder._beam_generators(sources.read_voxceleb2(str(voxceleb2)))
  assert sorted(generators) == ["dev", "test"]
  assert all(isinstance(g, beam.PTransform) for g in generators.values())
  assert len((tmp_path / f"{NAME}_dev{tfds_builders.BEAM_LISTING_SUFFIX}").read_text()
             .splitlines()) == 2
