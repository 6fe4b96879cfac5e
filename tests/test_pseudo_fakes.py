"""Temporally-local pseudo-fakes: span lengths and starts, time alignment of the replaced frames and
audio, labels, the draw frequencies, shape errors and the Grain transform on clip records."""

import collections
import dataclasses

import grain
import numpy as np
import pytest

from configs import common
from havic_jax.data import pseudo_fakes as pf
from havic_jax.data import records

FRAMES, SIZE, SPU = 16, 4, 3200  # 16 frames of 4×4 pixels, 3200 samples (0.2 s) per frame
REAL = {"audio_label": 0, "visual_label": 0, "overall_label": 0}
SPEC = pf.PseudoFakeOptions(**common.PSEUDO_FAKES)  # what the fine-grained detector trains with
ALWAYS = dataclasses.replace(SPEC, probability=1.0)


def _clip(frame_offset=0, audio_offset=0):
  """Frame f filled with frame_offset + f, audio samples of unit u equal to audio_offset + u:
  uint8 [FRAMES, SIZE, SIZE, 3], int16 [FRAMES·SPU]."""
  frames = np.broadcast_to((frame_offset + np.arange(FRAMES, dtype=np.uint8))[:, None, None, None],
                           (FRAMES, SIZE, SIZE, 3)).copy()
  audio = np.repeat(audio_offset + np.arange(FRAMES, dtype=np.int16), SPU)
  return frames, audio


ORIGINAL = _clip()
DONOR = _clip(100, 1000)


def _record(video_id="a.mp4", clip_start=0.0, labels=REAL, offsets=(0, 0)):
  frames, audio = _clip(*offsets)
  return records.ClipRecord(frames=frames, audio=audio, category="real", identity="id0",
                            video_id=video_id, clip_start=clip_start, **labels)


ORIGINAL_RECORD = _record()
DONOR_RECORD = _record("b.mp4", offsets=(100, 1000))
MODALITY_OF = {category: modality for modality, category in pf.CATEGORIES.items()}


def _spans(options, num_units=FRAMES, draws=3000, seed=0):
  rng = np.random.default_rng(seed)
  return [pf.draw_pseudo_fake(rng, num_units, options) for _ in range(draws)]


@pytest.mark.parametrize("r_min, r_max, shortest, longest", [
    (0.0, 1.0, 2, 16),     # the defaults: min_units decides the shortest span
    (0.05, 1.0, 2, 16),    # round(0.8) = 1 < min_units
    (0.25, 0.5, 4, 8),
    (0.3, 0.55, 5, 9),     # 4.8 and 8.8 units round to the nearest integer
])
def test_span_lengths_cover_exactly_the_allowed_range(r_min, r_max, shortest, longest):
  options = dataclasses.replace(ALWAYS, r_min=r_min, r_max=r_max)
  assert options.span_bounds(FRAMES) == (shortest, longest)
  spans = _spans(options)
  lengths = [s.end - s.start for s in spans]
  assert min(lengths) == shortest and max(lengths) == longest
  assert set(lengths) == set(range(shortest, longest + 1))
  assert all(0 <= s.start < s.end <= FRAMES for s in spans)


def test_start_is_uniform_among_the_starts_that_fit():
  spans = _spans(dataclasses.replace(ALWAYS, r_min=0.5, r_max=0.5), draws=4500)
  assert {s.end - s.start for s in spans} == {8}
  counts = collections.Counter(s.start for s in spans)
  assert sorted(counts) == list(range(FRAMES - 8 + 1))  # starts 0 … 8, both ends reached
  assert all(abs(c / len(spans) - 1 / 9) < 0.03 for c in counts.values()), counts


def test_impossible_span_bounds_and_options_raise():
  with pytest.raises(ValueError, match="no span"):
    dataclasses.replace(SPEC, min_units=4).span_bounds(3)
  for bad in (dict(probability=1.5), dict(r_min=0.6, r_max=0.5), dict(r_max=1.2),
              dict(min_units=0)):
    with pytest.raises(ValueError):
      dataclasses.replace(SPEC, **bad)


@pytest.mark.parametrize("modality", pf.MODALITIES)
def test_exactly_the_span_comes_from_the_donor_at_the_same_positions(modality):
  frames, audio = ORIGINAL
  before = frames.copy(), audio.copy()
  fake = pf.PseudoFake(modality, 5, 11)
  out_frames, out_audio, _ = pf.apply_pseudo_fake(frames, audio, REAL, *DONOR, fake)
  np.testing.assert_array_equal(frames, before[0])  # inputs untouched
  np.testing.assert_array_equal(audio, before[1])
  frame_values = out_frames[:, 0, 0, 0].astype(int)
  unit_values = out_audio.reshape(FRAMES, SPU)
  assert (unit_values == unit_values[:, :1]).all()  # every unit still a constant block
  units = np.arange(FRAMES)
  inside = (units >= 5) & (units < 11)
  video_expected = np.where(inside & (modality != "audio"), 100 + units, units)
  audio_expected = np.where(inside & (modality != "video"), 1000 + units, units)
  np.testing.assert_array_equal(frame_values, video_expected)
  np.testing.assert_array_equal(unit_values[:, 0], audio_expected)
  assert (out_frames == out_frames[:, :1, :1, :1]).all()


def _transform(options=ALWAYS, donor=DONOR_RECORD):
  """The production transform with a fixed donor record."""
  return pf.PseudoFakeTransform(lambda rng: donor, options)


def test_drawn_pseudo_fakes_are_aligned_with_their_category_and_labels():
  rng = np.random.default_rng(1)
  transform = _transform()
  shortest, longest = ALWAYS.span_bounds(FRAMES)
  units = np.arange(FRAMES)
  for _ in range(200):
    out = transform.random_map(ORIGINAL_RECORD, rng)
    modality = MODALITY_OF[out.category]
    from_donor_video = out.frames[:, 0, 0, 0] >= 100
    from_donor_audio = out.audio[::SPU] >= 1000
    span = np.flatnonzero(from_donor_video | from_donor_audio)
    assert shortest <= len(span) <= longest and (np.diff(span) == 1).all()  # one span
    replaced = (units >= span[0]) & (units <= span[-1])
    np.testing.assert_array_equal(from_donor_video, replaced & (modality != "audio"))
    np.testing.assert_array_equal(from_donor_audio, replaced & (modality != "video"))
    np.testing.assert_array_equal(out.frames[:, 0, 0, 0] % 100, units)  # same positions
    np.testing.assert_array_equal(out.audio[::SPU] % 1000, units)
    assert (out.audio_label, out.visual_label, out.overall_label) == (
        int(modality != "video"), int(modality != "audio"), 1)


@pytest.mark.parametrize("modality, expected", [
    ("video", {"audio_label": 0, "visual_label": 1, "overall_label": 1}),
    ("audio", {"audio_label": 1, "visual_label": 0, "overall_label": 1}),
    ("both", {"audio_label": 1, "visual_label": 1, "overall_label": 1}),
])
def test_labels_follow_the_replaced_modality_and_keep_earlier_fakes(modality, expected):
  fake = pf.PseudoFake(modality, 0, 4)
  labels = pf.apply_pseudo_fake(*ORIGINAL, REAL, *DONOR, fake)[2]
  assert labels == expected and all(type(v) is int for v in labels.values())
  fake_audio = {"audio_label": 1, "visual_label": 0, "overall_label": 1}
  labels = pf.apply_pseudo_fake(*ORIGINAL, fake_audio, *DONOR, fake)[2]
  assert labels == {key: max(value, fake_audio[key]) for key, value in expected.items()}


def test_share_of_pseudo_fakes_and_modalities():
  rng = np.random.default_rng(2)
  transform = _transform(SPEC)
  draws = 2000
  modalities = collections.Counter()
  for _ in range(draws):
    out = transform.random_map(ORIGINAL_RECORD, rng)
    if out is ORIGINAL_RECORD:
      continue
    modalities[MODALITY_OF[out.category]] += 1
  made = sum(modalities.values())
  assert abs(made / draws - 0.5) < 0.05, made
  assert set(modalities) == set(pf.MODALITIES)
  assert all(abs(count / made - 1 / 3) < 0.05 for count in modalities.values()), modalities
  fake = dataclasses.replace(ORIGINAL_RECORD, audio_label=1, visual_label=1, overall_label=1)
  never = _transform(dataclasses.replace(SPEC, probability=0.0))
  assert never.random_map(fake, rng) is fake


def test_shape_mismatches_raise():
  frames, audio = ORIGINAL
  rng = np.random.default_rng(3)
  short_audio = dataclasses.replace(ORIGINAL_RECORD, audio=audio[:-1])
  with pytest.raises(ValueError, match=r"\(51199,\).*\(16, 4, 4, 3\)"):
    _transform().random_map(short_audio, rng)
  short_donor = dataclasses.replace(DONOR_RECORD, frames=frames[:8])
  with pytest.raises(ValueError, match="donor"):
    _transform(donor=short_donor).random_map(ORIGINAL_RECORD, rng)
  with pytest.raises(ValueError, match="not a span"):
    pf.apply_pseudo_fake(frames, audio, REAL, *DONOR, pf.PseudoFake("video", 3, 17))


def test_grain_transform_makes_clip_records_with_a_pseudo_fake_category():
  clip = _record()
  other = _record("b.mp4", offsets=(100, 1000))
  transform = pf.PseudoFakeTransform(lambda rng: other, ALWAYS)
  out = transform.random_map(clip, np.random.default_rng(4))
  assert isinstance(out, records.ClipRecord)
  modality = next(m for m, c in pf.CATEGORIES.items() if c == out.category)
  assert out.overall_label == 1 and out.visual_label == int(modality != "audio")
  assert out.audio_label == int(modality != "video")
  assert (out.identity, out.video_id, out.clip_start) == ("id0", "a.mp4", 0.0)
  assert (out.frames[:, 0, 0, 0] >= 100).any() == (modality != "audio")
  assert (out.audio >= 1000).any() == (modality != "video")
  np.testing.assert_array_equal(clip.frames, ORIGINAL[0])  # the input record is untouched

  dataset = grain.MapDataset.source([clip] * 60).random_map(
      pf.PseudoFakeTransform(lambda rng: other, SPEC), seed=5)
  outputs = list(dataset)
  assert all(isinstance(o, records.ClipRecord) for o in outputs)
  categories = collections.Counter(o.category for o in outputs)
  assert set(categories) == {"real", *pf.CATEGORIES.values()}
  assert all(o is clip for o in outputs if o.category == "real")
  assert [o.category for o in outputs] == [o.category for o in dataset]  # seeded


def test_grain_transform_redraws_the_clip_itself_as_donor():
  clip = _record()
  same = _record(offsets=(100, 1000))  # same video_id and clip_start: the clip itself
  other = _record(clip_start=3.2, offsets=(100, 1000))
  calls = []

  def donor(rng):
    calls.append(None)
    return same if len(calls) < 3 else other

  out = pf.PseudoFakeTransform(donor, ALWAYS).random_map(clip, np.random.default_rng(6))
  assert len(calls) == 3 and out.category in pf.CATEGORIES.values()
  out = pf.PseudoFakeTransform(lambda rng: same, ALWAYS).random_map(clip, np.random.default_rng(6))
  assert out is clip


def test_record_donor_decodes_a_record_of_the_source():
  encoded = [records.encode(_record(f"{i}.mp4", offsets=(10 * i, 100 * i)), "raw")
             for i in range(4)]
  donor = pf.RecordDonor(encoded, np.array([1, 3]))
  rng = np.random.default_rng(7)
  drawn = collections.Counter(donor(rng).video_id for _ in range(40))
  assert set(drawn) == {"1.mp4", "3.mp4"}
  clip = donor(rng)
  index = int(clip.video_id[0])
  np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], 10 * index + np.arange(FRAMES))
  transform = pf.PseudoFakeTransform(donor, ALWAYS)
  out = transform.random_map(records.decode(encoded[0]), rng)
  assert out.overall_label == 1 and out.video_id == "0.mp4"
