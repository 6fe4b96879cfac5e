"""Fine-tuning augmentation (spec §11): the draws, each transform against its own formula, and the
audio masks and noise."""

import colorsys
import dataclasses
import io

import cv2
import numpy as np
import pytest

from configs import common
from havic_jax.data import augment

H, W = 48, 64  # non-square frames, so a swapped (height, width) shows
GREY = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def _frames(seed, num_frames=3, height=H, width=W):
  """Smooth random RGB frames spanning 0..255 in every channel: uint8 [T, H, W, 3]."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
  smooth = np.stack([cv2.GaussianBlur(f, (0, 0), 2) for f in noise]).astype(np.float64)
  low = smooth.min(axis=(1, 2), keepdims=True)
  high = smooth.max(axis=(1, 2), keepdims=True)
  return np.rint((smooth - low) * 255 / (high - low)).astype(np.uint8)


def _aug(height=H, width=W, **changes):
  return dataclasses.replace(augment.VideoAugmentation.identity(height, width), **changes)


EVERYTHING = _aug(flip=True, crop=(4, 6, 40, 50), down_up=0.7, jpeg_quality=50, blur_sigma=1.2,
                  brightness=1.1, contrast=0.9, saturation=1.15, hue=0.05)


def test_same_seed_same_output_and_seeds_draw_differently():
  frames = _frames(0)
  first = augment.augment_video(np.random.default_rng(7), frames)
  again = augment.augment_video(np.random.default_rng(7), frames)
  other = augment.augment_video(np.random.default_rng(8), frames)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  draws = {augment.draw_video_augmentation(np.random.default_rng(seed), H, W)
           for seed in range(20)}
  assert len(draws) == 20


def test_every_frame_gets_the_same_transform():
  clip = np.repeat(_frames(1, num_frames=1), 5, axis=0)
  for seed in range(8):
    out = augment.augment_video(np.random.default_rng(seed), clip)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert all(np.array_equal(frame, out[0]) for frame in out[1:]), seed
  distinct = _frames(2, num_frames=4)
  original = distinct.copy()
  out = augment.apply_video_augmentation(distinct, EVERYTHING)
  np.testing.assert_array_equal(distinct, original)
  for k in range(len(distinct)):  # a frame's result does not depend on the other frames
    np.testing.assert_array_equal(
        out[k], augment.apply_video_augmentation(distinct[k:k + 1], EVERYTHING)[0])


def test_identity_returns_the_input_in_a_new_array():
  frames = _frames(3)
  out = augment.apply_video_augmentation(frames, _aug())
  np.testing.assert_array_equal(out, frames)
  assert not np.shares_memory(out, frames)


def test_flip_mirrors_columns_after_the_crop():
  frames = _frames(4)
  np.testing.assert_array_equal(augment.apply_video_augmentation(frames, _aug(flip=True)),
                                frames[:, :, ::-1])
  crop = (5, 3, 30, 40)
  np.testing.assert_array_equal(
      augment.apply_video_augmentation(frames, _aug(crop=crop, flip=True)),
      augment.apply_video_augmentation(frames, _aug(crop=crop))[:, :, ::-1])


def test_crop_box_is_resized_back_to_the_frame():
  frames = np.zeros((2, H, W, 3), np.uint8)
  frames[:, 12:18, 20:28] = 200  # inside the box
  frames[:, 40:46, 2:8] = 255    # outside it
  top, left, height, width = crop = (8, 16, 24, 16)  # scaled ×2 in rows, ×4 in columns
  out = augment.apply_video_augmentation(frames, _aug(crop=crop)).astype(np.float64)
  for frame in out:
    weight = frame[..., 0]
    rows, cols = np.mgrid[:H, :W]
    # Pixel centres map as (x + 0.5)·scale − 0.5: block rows 12..17 → 13.5, columns 20..27 → 31.5.
    assert abs((weight * rows).sum() / weight.sum() - 13.5) < 0.05
    assert abs((weight * cols).sum() / weight.sum() - 31.5) < 0.05
    assert abs(weight.sum() - 200 * 6 * 8 * 2 * 4) < 0.01 * weight.sum()  # only the inner block
  expected = cv2.resize(frames[0, top:top + height, left:left + width], (W, H),
                        interpolation=cv2.INTER_LINEAR)
  np.testing.assert_array_equal(out[0], expected)


def test_down_up_loses_fine_detail_and_keeps_flat_areas():
  frames = np.full((1, H, W, 3), 100, np.uint8)
  checker = (np.indices((H, W // 2)).sum(0) % 2 * 255).astype(np.uint8)
  frames[0, :, :W // 2] = checker[..., None]
  out = augment.apply_video_augmentation(frames, _aug(down_up=0.5))
  assert out[0, :, W // 2 + 4:].min() == out[0, :, W // 2 + 4:].max() == 100
  assert frames[0, 4:-4, 4:W // 2 - 4].std() > 120
  assert out[0, 4:-4, 4:W // 2 - 4].std() < 40
  # With a crop, the box goes straight to the small size and back.
  crop = (2, 4, 40, 50)
  small = cv2.resize(frames[0, 2:42, 4:54], (round(W * 0.7), round(H * 0.7)))
  np.testing.assert_array_equal(
      augment.apply_video_augmentation(frames, _aug(crop=crop, down_up=0.7))[0],
      cv2.resize(small, (W, H)))


def test_jpeg_matches_pillow_at_the_same_quality():
  pil_image = pytest.importorskip("PIL.Image")
  frame = _frames(5, num_frames=1)
  errors = {}
  for quality in (30, 95):
    out = augment.apply_video_augmentation(frame, _aug(jpeg_quality=quality))[0].astype(int)
    buffer = io.BytesIO()
    pil_image.fromarray(frame[0]).save(buffer, format="JPEG", quality=quality)
    pil = np.asarray(pil_image.open(buffer)).astype(int)
    assert np.abs(out - pil).mean() < 0.25  # RGB handed to the encoder in its own channel order
    errors[quality] = np.abs(out - frame[0]).mean()
  assert errors[30] > 2 * errors[95] and errors[95] > 0.5


def _torchvision_gaussian(sigma, size=13):
  x = np.linspace(-(size - 1) / 2, (size - 1) / 2, size)
  g = np.exp(-0.5 * (x / sigma) ** 2)
  return g / g.sum()


def test_blur_of_an_impulse_is_the_gaussian_with_mirrored_borders():
  sigma = 1.5
  g = _torchvision_gaussian(sigma)
  frames = np.zeros((1, 31, 33, 3), np.uint8)
  frames[0, 15, 16] = 255  # centre impulse
  frames[0, 0, 0] = 255    # corner impulse
  out = augment.apply_video_augmentation(frames, _aug(31, 33, blur_sigma=sigma))[0, ..., 0]
  expected = np.zeros((31, 33))
  expected[9:22, 10:23] = 255 * np.outer(g, g)
  # "reflect" padding (the edge pixel not repeated): the corner keeps one quarter of the kernel.
  expected[:7, :7] += 255 * np.outer(g[6:], g[6:])
  assert np.abs(out - expected).max() <= 1


def test_brightness_scales_values():
  frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
  for factor in (0.83, 1.17):
    out = augment.apply_video_augmentation(frames, _aug(16, 16, brightness=factor))
    np.testing.assert_array_equal(out, np.clip(np.rint(frames * factor), 0, 255))


def test_contrast_blends_with_each_frames_mean_grey_level():
  frames = _frames(6, num_frames=2)
  frames[1] = frames[1] // 3  # a darker frame: its own mean differs from the clip's
  factor = 0.8
  out = augment.apply_video_augmentation(frames, _aug(contrast=factor)).astype(int)
  mean = (frames @ GREY).mean(axis=(1, 2))[:, None, None, None]
  expected = np.clip(np.rint(factor * frames + (1 - factor) * mean), 0, 255)
  assert np.abs(out - expected).max() <= 1 and (out == expected).mean() > 0.99
  clip_mean = np.clip(np.rint(factor * frames + (1 - factor) * mean.mean()), 0, 255)
  assert np.abs(out - clip_mean).max() > 2


def test_saturation_blends_with_the_grey_image():
  frames = _frames(7)
  grey = (frames @ GREY)[..., None]
  out = augment.apply_video_augmentation(frames, _aug(saturation=0.0)).astype(int)
  assert (out == out[..., :1]).all()  # R = G = B
  assert np.abs(out - np.rint(grey)).max() <= 1
  out = augment.apply_video_augmentation(frames, _aug(saturation=1.2)).astype(int)
  error = np.abs(out - np.clip(1.2 * frames - 0.2 * grey, 0, 255))
  assert error.max() <= 1.5 and error.mean() < 0.3  # rounding: 0.25 on average


def test_hue_shift_matches_colorsys():
  rng = np.random.default_rng(8)
  frames = rng.integers(0, 256, (1, 12, 12, 3), dtype=np.uint8)
  frames[0, 0, :6] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [255, 255, 255],
                      [90, 90, 90]]
  for hue in (0.1, -0.1, 0.03, 1 / 3, 0.5):
    out = augment.apply_video_augmentation(frames, _aug(12, 12, hue=hue)).astype(int)
    expected = np.empty_like(out)
    for index in np.ndindex(frames.shape[:3]):
      h, s, v = colorsys.rgb_to_hsv(*(frames[index] / 255))
      expected[index] = np.rint(np.array(colorsys.hsv_to_rgb((h + hue) % 1, s, v)) * 255)
    assert np.abs(out - expected).max() <= 1, hue
  red = augment.apply_video_augmentation(frames, _aug(12, 12, hue=1 / 3))[0, 0, 0]
  np.testing.assert_array_equal(red, [0, 255, 0])


def test_drawn_crop_boxes_respect_scale_and_ratio():
  rng = np.random.default_rng(9)
  for height, width in ((224, 224), (48, 64), (180, 120)):
    boxes = np.array([augment.random_resized_crop_box(rng, height, width) for _ in range(1500)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # w and h are rounded: the scale and ratio bounds hold up to half a pixel on each side.
    area = height * width
    assert ((w + 0.5) * (h + 0.5) >= 0.8 * area).all() and ((w - 0.5) * (h - 0.5) <= area).all()
    assert ((w + 0.5) / (h - 0.5) >= 0.75).all() and ((w - 0.5) / (h + 0.5) <= 1.33).all()
    assert (w * h).min() < 0.82 * area  # the low end of the scale range is reached
    free = (h < height) & (w < width)
    position = np.concatenate([top[free] / (height - h[free]), left[free] / (width - w[free])])
    assert abs(position.mean() - 0.5) < 0.05  # uniform placement
  # A frame no box fits in 10 tries: the centred box with the ratio clamped to the range.
  assert augment.random_resized_crop_box(rng, 10, 100) == (0, 43, 10, 13)
  assert augment.random_resized_crop_box(rng, 100, 10) == (43, 0, 13, 10)


def test_draw_probabilities_and_ranges():
  rng = np.random.default_rng(10)
  n = 4000
  draws = [augment.draw_video_augmentation(rng, 224, 224) for _ in range(n)]

  def rate(values, p):
    share = np.mean(values)
    assert abs(share - p) < 3 * np.sqrt(p * (1 - p) / n), (share, p)  # fixed seed: no flakes

  rate([d.flip for d in draws], 0.5)
  rate([d.down_up is not None for d in draws], 0.3)
  rate([d.jpeg_quality is not None for d in draws], 0.3)
  rate([d.blur_sigma is not None for d in draws], 0.2)
  quality = np.array([d.jpeg_quality for d in draws if d.jpeg_quality is not None])
  assert quality.dtype.kind == "i" and quality.min() == 30 and quality.max() == 95
  sigma = np.array([d.blur_sigma for d in draws if d.blur_sigma is not None])
  assert 0.1 <= sigma.min() < 0.15 and 1.95 < sigma.max() <= 2.0
  factor = np.array([d.down_up for d in draws if d.down_up is not None])
  assert 0.5 <= factor.min() < 0.51 and 0.89 < factor.max() <= 0.9
  for name, low, high in (("brightness", 0.8, 1.2), ("contrast", 0.8, 1.2),
                          ("saturation", 0.8, 1.2), ("hue", -0.1, 0.1)):
    values = np.array([getattr(d, name) for d in draws])
    assert low <= values.min() < low + 0.005 and high - 0.005 < values.max() <= high, name
    assert abs(values.mean() - (low + high) / 2) < 0.01, name


def test_mask_fbank_zeroes_one_band_of_bins_and_one_of_frames():
  rng = np.random.default_rng(11)
  fbank = np.random.default_rng(0).uniform(-15, -1, (1024, 128)).astype(np.float32)
  original = fbank.copy()
  widths = {"bins": [], "frames": []}
  edges = []
  n = 200
  for _ in range(n):
    out = augment.mask_fbank(rng, fbank, common.FREQ_MASK, common.TIME_MASK)  # spec: 20, 100
    assert out.dtype == np.float32 and out.shape == fbank.shape
    zero = out == 0
    rows, cols = zero.all(axis=1), zero.all(axis=0)
    assert np.array_equal(zero, rows[:, None] | cols[None, :])
    assert np.array_equal(out[~zero], fbank[~zero])
    for name, band, limit in (("frames", rows, 100), ("bins", cols, 20)):
      index = np.flatnonzero(band)
      assert len(index) < limit and (np.diff(index) == 1).all()  # one contiguous band
      widths[name].append(len(index))
    if cols.any():
      edges += [np.flatnonzero(cols)[0], np.flatnonzero(cols)[-1]]
  np.testing.assert_array_equal(fbank, original)
  # torchaudio widths floor(U(0, max)): mean (max − 1) / 2, standard deviation ≈ max / √12.
  assert abs(np.mean(widths["bins"]) - 9.5) < 4 * 20 / np.sqrt(12 * n)
  assert abs(np.mean(widths["frames"]) - 49.5) < 4 * 100 / np.sqrt(12 * n)
  assert min(edges) < 5 and max(edges) > 122  # bands reach both ends of the mel axis


def test_add_noise_raises_half_the_clips_by_less_than_a_tenth():
  rng = np.random.default_rng(12)
  features = np.random.default_rng(1).standard_normal((256, 128)).astype(np.float32)
  original = features.copy()
  unchanged, peaks = 0, []
  n = 400
  for _ in range(n):
    out = augment.add_noise(rng, features)
    assert out.dtype == np.float32
    diff = out.astype(np.float64) - features
    assert diff.min() >= 0 and diff.max() < 0.1
    if not diff.any():
      unchanged += 1
    else:
      assert diff.std() > 0.1 * diff.max()  # a fresh uniform field, not a constant
      peaks.append(diff.max() / 0.1)  # ≈ this clip's U(0, 1) scale
  np.testing.assert_array_equal(features, original)
  assert abs(unchanged / n - 0.5) < 4 * np.sqrt(0.25 / n)
  assert min(peaks) < 0.1 and max(peaks) > 0.9 and abs(np.mean(peaks) - 0.5) < 0.1


def test_bad_inputs_are_refused():
  frames = _frames(13)
  with pytest.raises(ValueError, match="crop box"):
    augment.apply_video_augmentation(frames, _aug(crop=(10, 0, H, W)))
  with pytest.raises(ValueError, match="uint8"):
    augment.apply_video_augmentation(frames.astype(np.float32), _aug())
  with pytest.raises(ValueError, match=r"\[T, F\]"):
    augment.mask_fbank(np.random.default_rng(0), np.zeros(10), 20, 100)
