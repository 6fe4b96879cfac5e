"""Grain pipelines over prepared shards: shapes, determinism, resume, process sharding, eval
padding and class balance."""

import itertools

import numpy as np
import pytest

from configs import common, finetune_tiny
from configs.tiny import tiny_model
from havic_jax.data import augment, examples, pseudo_fakes, records, samplers
from havic_jax.data import input_pipeline as ip
from havic_jax.media import fbank
from havic_jax.media.clips import INT16_SCALE
from havic_jax.models.config import ModelConfig, model_config_from

BASE = ModelConfig()
TINY = model_config_from(tiny_model())
# Every fine-tuning augmentation, with the audio masks the tiny model's input scales them to.
AUGMENTATION = augment.Options(**dict(finetune_tiny.get_config().augment, video=True))
RATIOS = dict(video_mask_ratio=0.9, audio_mask_ratio=0.8125)


@pytest.fixture(scope="module")
def data(prepared_corpus):
  return records.open_prepared(str(prepared_corpus))


def take(dataset, n):
  return list(itertools.islice(iter(dataset), n))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_pretraining_batches_have_the_spec_shapes(data):
  batch = take(ip.training_dataset(data, "train", BASE, "pretrain", 2, seed=0, **RATIOS), 1)[0]
  spec = ip.example_spec(BASE, "pretrain", **RATIOS)
  assert set(batch) == set(spec)
  for key, (shape, dtype) in spec.items():
    assert batch[key].shape == (2,) + shape and batch[key].dtype == dtype, key
  assert batch["video"].shape == (2, 16, 224, 224, 3) and batch["audio"].shape == (2, 1024, 128)
  assert batch["ids_keep_video"].shape == (2, 8 * 19) and batch["ids_keep_audio"].shape == (2, 96)
  # The audio is the normalised fbank of one of the records' waveforms (no augmentation).
  source = data.source()
  waves = [records.decode(source[i]).audio for i in range(len(source))]
  references = [fbank.audio_features(w.astype(np.float32) / INT16_SCALE) for w in waves]
  for audio in batch["audio"]:
    assert min(np.abs(audio - r).max() for r in references) < 1e-5
  for ids in batch["ids_keep_video"]:  # tube masks: one spatial subset in all 8 time slices
    slices = ids.reshape(8, 19)
    np.testing.assert_array_equal(slices - 196 * np.arange(8)[:, None], slices[:1].repeat(8, 0))
    assert len(set(slices[0])) == 19 and slices[0].max() < 196
  for ids in batch["ids_keep_audio"]:  # 12 distinct tokens inside each 64-token segment
    segments = ids.reshape(8, 12) - 64 * np.arange(8)[:, None]
    assert segments.min() >= 0 and segments.max() < 64
    assert all(len(set(s)) == 12 for s in segments)


def test_same_seed_same_batches_and_exact_resume(data):
  make = lambda seed: ip.training_dataset(data, None, TINY, "pretrain", 2, seed=seed, **RATIOS)
  first = take(make(0), 6)
  assert_batches_equal(first, take(make(0), 6))
  assert not np.array_equal(first[0]["audio"], take(make(1), 1)[0]["audio"])
  iterator = iter(make(0))
  for _ in range(2):
    next(iterator)
  state = iterator.get_state()
  resumed = iter(make(0))
  resumed.set_state(state)
  assert_batches_equal([next(resumed) for _ in range(4)], first[2:])


def test_worker_processes_give_the_same_batches_and_resume(data):
  make = lambda workers: ip.training_dataset(data, None, TINY, "finetune", 2, seed=4,
                                             balanced=True, augmentation=AUGMENTATION,
                                             workers=workers)
  expected = take(make(0), 5)
  iterator = iter(make(1))  # one worker process: the 2-core test machine stays responsive
  got = [next(iterator) for _ in range(2)]
  state = iterator.get_state()
  resumed = iter(make(1))
  resumed.set_state(state)
  got += [next(resumed) for _ in range(3)]
  assert_batches_equal(got, expected)


def _record_of(audio, references):
  return int(np.argmin([np.abs(audio - r).max() for r in references]))


def test_process_shards_are_disjoint_and_cover_each_epoch(data):
  source = data.source()
  references = [examples.audio_features(records.decode(source[i]).audio, TINY)
                for i in range(len(source))]
  seen = []
  for process in range(2):
    batches = take(ip.training_dataset(data, None, TINY, "pretrain", 2, seed=9, shard_index=process,
                                       shard_count=2, **RATIOS), 2)  # 4 of the 8 records
    seen.append([_record_of(a, references) for b in batches for a in b["audio"]])
  assert set(seen[0]).isdisjoint(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(8))


def test_eval_is_padded_ordered_and_complete(data):
  per_process = []
  for process in range(2):
    batches = take(ip.eval_dataset(data, None, TINY, 3, shard_index=process, shard_count=2), 99)
    assert len(batches) == 2  # 8 records -> padded to 12 = 2 global batches of 2 × 3
    per_process.append(batches)
  valid = [(i, v) for bs in per_process for b in bs
           for i, v in zip(b["record_index"], b["valid"])]
  assert sorted(int(i) for i, v in valid if v) == list(range(8))
  assert sum(v == 0 for _, v in valid) == 4
  batch = per_process[0][0]
  clip = records.decode(data.source()[int(batch["record_index"][0])])
  assert batch["overall_label"][0] == clip.overall_label
  np.testing.assert_array_equal(batch["video"][0], examples.video_input(clip.frames, TINY))


def test_balanced_sampling_draws_both_classes_equally(data):
  labels = data.record_labels()[data.split_indices("train")]
  assert labels.mean() > 0.6  # the split itself is mostly fake
  batches = take(ip.training_dataset(data, "train", TINY, "finetune", 8, seed=1, balanced=True),
                 25)
  drawn = np.concatenate([b["overall_label"] for b in batches])
  assert abs(drawn.mean() - 0.5) < 0.1  # 200 draws: standard error 0.035
  probabilities = samplers.balanced_weights(np.array([0, 1, 1, 1]))
  np.testing.assert_allclose(probabilities, [0.5, 1 / 6, 1 / 6, 1 / 6])


def test_finetune_augmentation_changes_inputs_but_not_labels(data):
  batch = take(ip.training_dataset(data, "train", TINY, "finetune", 4, seed=2,
                                     augmentation=AUGMENTATION), 1)[0]
  assert set(batch) == set(ip.example_spec(TINY, "finetune"))
  assert batch["video"].dtype == np.uint8 and batch["audio"].dtype == np.float32
  plain = take(ip.eval_dataset(data, "train", TINY, 6), 1)[0]
  # No augmented clip equals any plain one, but every label set is one of the split's.
  for video in batch["video"]:
    assert all(not np.array_equal(video, p) for p in plain["video"])
  combos = {tuple(p[k] for k in records.LABEL_KEYS) for p in
            [dict(zip(plain, v)) for v in zip(*plain.values())]}
  for row in zip(*(batch[k] for k in records.LABEL_KEYS)):
    assert tuple(row) in combos


def test_missing_manifest_and_unknown_split_are_explained(tmp_path, data):
  with pytest.raises(records.DataError, match="data_pipelines.prepare"):
    records.open_prepared(str(tmp_path))
  with pytest.raises(records.DataError, match="no split 'nope'"):
    data.split_indices("nope")


def test_mixture_shares_each_process_stream_and_resumes(data, faceless_videos, tmp_path):
  from havic_jax.data import prepare
  prepare.prepare("folder", str(faceless_videos), str(tmp_path / "ood"),
                  options=prepare.PrepareOptions(crop="centre"))
  other = records.open_prepared(str(tmp_path / "ood"))
  ood = {v["video_id"] for v in other.manifest["videos"]}
  assert ip.parse_mixture(f"{tmp_path / 'ood'}:0.25") == ((str(tmp_path / "ood"), 0.25),)
  for process in range(2):
    clips = ip.ProcessRows(ip.training_records(data, data.split_indices(None), 8, seed=1,
                                               mixture=((other, 0.25),)), 4, process, 2)
    ids = [clips[i].video_id for i in range(200)]
    assert sum(i in ood for i in ids) == 50  # a quarter of every process's clips
    assert set(ids) & ood == ood  # every out-of-domain clip is drawn
  batches = ip.training_dataset(data, None, TINY, "pretrain", 4, seed=1,
                                mixture=((other, 0.25),), **RATIOS)
  iterator = iter(batches)
  next(iterator)
  state = iterator.get_state()
  rest = take(iterator, 2)
  resumed = iter(batches)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 2), rest)
  for bad in ("dir", "dir:1.5", "a:0.5,b:0.6"):
    with pytest.raises(ValueError, match="data.mixture"):
      ip.parse_mixture(bad)
  with pytest.raises(ValueError, match="pretraining only"):
    ip.training_dataset(data, None, TINY, "finetune", 4, seed=1, mixture=((other, 0.25),))


def _global_batches(make, count, steps):
  """The first ``steps`` global batches of ``count`` simulated processes: each process's batch
  of ``make(shard_index, shard_count)``, concatenated in process order (the rows each holds of
  the global array)."""
  per_process = [take(make(process, count), steps) for process in range(count)]
  return [{key: np.concatenate([p[step][key] for p in per_process]) for key in per_process[0][0]}
          for step in range(steps)]


@pytest.mark.parametrize("case", ["pretrain", "finetune", "mixture", "identities"])
def test_global_batches_do_not_depend_on_the_process_count(data, case, faceless_videos,
                                                           tmp_path):
  """The global batch of steps 0-2 is the same on 1, 2 and 8 processes: the same clips in the
  same rows, the same masks, augmentations, pseudo-fakes and identities (every draw is made
  from the record's position in the global stream, before a process takes its rows)."""
  global_batch = 8
  options = dict(pretrain=dict(stage="pretrain", **RATIOS),
                 finetune=dict(stage="finetune", balanced=True, augmentation=AUGMENTATION,
                               pseudo_fake_options=pseudo_fakes.PseudoFakeOptions(
                                   **common.PSEUDO_FAKES)),
                 identities=dict(stage="pretrain", identities=data.identity_vocabulary(
                     data.split_indices(None)), clips_per_identity=2, **RATIOS))
  if case == "mixture":
    from havic_jax.data import prepare
    prepare.prepare("folder", str(faceless_videos), str(tmp_path / "ood"),
                    options=prepare.PrepareOptions(crop="centre"))
    options[case] = dict(stage="pretrain", mixture=((records.open_prepared(
        str(tmp_path / "ood")), 0.25),), **RATIOS)
  kwargs = dict(options[case])
  stage = kwargs.pop("stage")
  make = lambda index, count: ip.training_dataset(
      data, None, TINY, stage, global_batch // count, seed=3, shard_index=index,
      shard_count=count, **kwargs)
  one = _global_batches(make, 1, 3)
  # Identity groups of 2 clips stay whole in a process's rows: at most 4 processes of 2 rows.
  for count in (2, 4) if case == "identities" else (2, 8):
    assert_batches_equal(_global_batches(make, count, 3), one)
  # The draws differ between the rows of one batch (not one generator per process slot).
  key = "ids_keep_video" if stage == "pretrain" else "video"
  assert len({one[0][key][i].tobytes() for i in range(global_batch)}) > global_batch // 2
