"""Fine-tuning data augmentation (spec §11), in NumPy and OpenCV for data-loader workers.

Video: one draw per clip (:class:`VideoAugmentation`), applied identically to every frame:
horizontal flip, random resized crop, down-up resize, JPEG, Gaussian blur, colour jitter.
Audio: a frequency and a time mask on the log-mel filterbank before normalisation
(:func:`mask_fbank`), and uniform noise after it (:func:`add_noise`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

import cv2
import numpy as np

FLIP_PROB = 0.5                  # horizontal flip p 0.5
CROP_SCALE = (0.8, 1.0)          # random resized crop scale (0.8, 1): share of the frame's area
CROP_RATIO = (0.75, 1.33)        # random resized crop ratio (0.75, 1.33): width / height
CROP_TRIES = 10                  # torchvision's RandomResizedCrop attempts before a centre crop
DOWN_UP_PROB = 0.3               # down-up resize p 0.3
DOWN_UP_FACTOR = (0.5, 0.9)      # down-up resize factor U(0.5, 0.9) of height and width
JPEG_PROB = 0.3                  # JPEG p 0.3
JPEG_QUALITY = (30, 95)          # JPEG quality U[30, 95], integers, both ends included
BLUR_PROB = 0.2                  # Gaussian blur p 0.2
BLUR_KERNEL = 13                 # Gaussian blur kernel 13 (pixels, square)
BLUR_SIGMA = (0.1, 2.0)          # Gaussian blur σ U(0.1, 2), pixels
BRIGHTNESS = 0.2                 # colour jitter brightness ±0.2: factor U(0.8, 1.2)
CONTRAST = 0.2                   # colour jitter contrast ±0.2: factor U(0.8, 1.2)
SATURATION = 0.2                 # colour jitter saturation ±0.2: factor U(0.8, 1.2)
HUE = 0.1                        # colour jitter hue ±0.1: shift U(-0.1, 0.1) of a full turn
NOISE_PROB = 0.5                 # with p 0.5 add U(0,1)·rand(T, F)/10
NOISE_SCALE = 0.1                # the /10 of U(0,1)·rand(T, F)/10

# torchvision's rgb_to_grayscale weights (R, G, B), for contrast and saturation.
GREY_WEIGHTS = np.array([0.2989, 0.587, 0.114])

Box = Tuple[int, int, int, int]  # top, left, height, width in pixels


@dataclasses.dataclass(frozen=True)
class VideoAugmentation:
  """The parameters of one clip's augmentation draw.

  Applied in the spec's order: crop (``crop`` = top, left, height, width in pixels of the input
  frame) resized back to the frame size, horizontal ``flip``, ``down_up`` resize (factor of height
  and width, or None), JPEG at ``jpeg_quality`` (or None), Gaussian blur of σ ``blur_sigma``
  pixels (or None), then colour jitter: ``brightness``, ``contrast``, ``saturation`` factors (1 is
  neutral) and ``hue`` shift in turns (0 is neutral). The crop box is in the unflipped frame's
  coordinates: flipping after cropping equals torchvision's flip-then-crop with the mirrored box,
  and the drawn boxes are mirror-symmetric in distribution.
  """
  flip: bool
  crop: Box
  down_up: Optional[float]
  jpeg_quality: Optional[int]
  blur_sigma: Optional[float]
  brightness: float
  contrast: float
  saturation: float
  hue: float

  @classmethod
  def identity(cls, height: int, width: int) -> VideoAugmentation:
    """The augmentation that returns a height × width clip unchanged."""
    return cls(flip=False, crop=(0, 0, height, width), down_up=None, jpeg_quality=None,
               blur_sigma=None, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0)


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int) -> Box:
  """torchvision's ``RandomResizedCrop.get_params``: (top, left, height, width) in pixels.

  Up to 10 tries of an area share U(CROP_SCALE) and a log-uniform width/height ratio in
  CROP_RATIO; the first box that fits lies at a uniform position. Otherwise the largest centred
  box whose ratio is clamped to CROP_RATIO.
  """
  area = height * width
  log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
  for _ in range(CROP_TRIES):
    target_area = area * rng.uniform(*CROP_SCALE)
    ratio = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * ratio)))
    h = int(round(math.sqrt(target_area / ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < CROP_RATIO[0]:
    w, h = width, int(round(width / CROP_RATIO[0]))
  elif in_ratio > CROP_RATIO[1]:
    w, h = int(round(height * CROP_RATIO[1])), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def draw_video_augmentation(rng: np.random.Generator, height: int, width: int
                            ) -> VideoAugmentation:
  """One clip's augmentation for height × width frames (spec §11).

  Colour jitter is always applied, as torchvision's ColorJitter does, with factors uniform in
  [1 − 0.2, 1 + 0.2] and a hue shift uniform in [−0.1, 0.1] turns; torchvision applies the four
  in a random order, here they always run brightness, contrast, saturation, hue.
  """
  flip = bool(rng.random() < FLIP_PROB)
  crop = random_resized_crop_box(rng, height, width)
  down_up = float(rng.uniform(*DOWN_UP_FACTOR)) if rng.random() < DOWN_UP_PROB else None
  jpeg_quality = (int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
                  if rng.random() < JPEG_PROB else None)
  blur_sigma = float(rng.uniform(*BLUR_SIGMA)) if rng.random() < BLUR_PROB else None
  return VideoAugmentation(
      flip=flip, crop=crop, down_up=down_up, jpeg_quality=jpeg_quality, blur_sigma=blur_sigma,
      brightness=float(rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)),
      contrast=float(rng.uniform(1 - CONTRAST, 1 + CONTRAST)),
      saturation=float(rng.uniform(1 - SATURATION, 1 + SATURATION)),
      hue=float(rng.uniform(-HUE, HUE)))


def gaussian_kernel(sigma: float, size: int = BLUR_KERNEL) -> np.ndarray:
  """torchvision's 1-D Gaussian: exp(−x²/2σ²) at x = −(size−1)/2 … (size−1)/2, summing to 1.
  [size] float64."""
  x = np.arange(size) - (size - 1) / 2
  kernel = np.exp(-0.5 * (x / sigma) ** 2)
  return kernel / kernel.sum()


def _resize_steps(aug: VideoAugmentation, height: int, width: int) -> List[Tuple[int, int]]:
  """The cv2 sizes (width, height) the crop is resized to, in turn.

  With a down-up factor the crop is resized straight to the small size and back (both bilinear;
  factors ≥ 0.5 need no antialiasing): one resize fewer than crop → full → small → full. A
  full-frame crop without down-up needs none.
  """
  top, left, crop_h, crop_w = aug.crop
  if not (0 <= top and 0 <= left and 0 < crop_h and 0 < crop_w and top + crop_h <= height
          and left + crop_w <= width):
    raise ValueError(f"crop box {aug.crop} outside {height}×{width} frames")
  steps = []
  if aug.down_up is not None:
    steps.append((max(1, round(width * aug.down_up)), max(1, round(height * aug.down_up))))
  if steps or (crop_h, crop_w) != (height, width):
    steps.append((width, height))
  return steps


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  """An RGB image through JPEG at ``quality`` (OpenCV's libjpeg, 4:2:0 chroma) and back."""
  ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise RuntimeError("JPEG encoding failed")
  return cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)


def _colour_jitter(image: np.ndarray, aug: VideoAugmentation, saturation_matrix: np.ndarray
                   ) -> np.ndarray:
  """Brightness, contrast, saturation, hue of one uint8 RGB image with torchvision's formulas,
  each step rounded and clipped to [0, 255]; neutral settings are skipped and change nothing.

  saturation_matrix: [3, 3] float32, s·I + (1 − s)·GREY_WEIGHTS in every row.
  """
  if aug.brightness != 1:  # b·x (x ≥ 0 and b > 0, so the abs is a no-op)
    image = cv2.convertScaleAbs(image, alpha=aug.brightness)
  if aug.contrast != 1:  # c·x + (1 − c)·mean grey level of the image
    mean = float(np.dot(cv2.sumElems(image)[:3], GREY_WEIGHTS)) / (image.size // 3)
    image = cv2.addWeighted(image, aug.contrast, image, 0.0, (1 - aug.contrast) * mean)
  if aug.saturation != 1:  # s·x + (1 − s)·grey(x); OpenCV's fixed point: within 1 of rint
    image = cv2.transform(image, saturation_matrix)
  if aug.hue != 0:  # hue + shift modulo one turn; float HSV (H in degrees), as torchvision's
    hsv = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv.reshape(-1, 3)[:, 0] += np.float32(aug.hue * 360 % 360)  # OpenCV wraps H in [0, 720)
    image = cv2.convertScaleAbs(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
  return image


def apply_video_augmentation(frames: np.ndarray, aug: VideoAugmentation) -> np.ndarray:
  """Applies ``aug`` to every frame of a clip.

  frames: uint8 [T, H, W, 3] RGB. Returns a new uint8 [T, H, W, 3] array; the input is left as is.
  Each frame runs through the whole chain before the next (a 224×224 frame stays in cache).
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"want uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
  height, width = frames.shape[1:3]
  steps = _resize_steps(aug, height, width)
  top, left, crop_h, crop_w = aug.crop
  kernel = None if aug.blur_sigma is None else gaussian_kernel(aug.blur_sigma)
  s = aug.saturation
  saturation_matrix = (s * np.eye(3) + (1 - s) * GREY_WEIGHTS[None, :]).astype(np.float32)
  out = np.empty_like(frames)
  for i in range(len(frames)):
    image = frames[i, top:top + crop_h, left:left + crop_w]
    for size in steps:
      image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    if aug.flip:
      image = cv2.flip(image, 1)
    if aug.jpeg_quality is not None:
      image = _jpeg(image, aug.jpeg_quality)
    if kernel is not None:  # borders mirrored without repeating the edge: torchvision's reflect
      image = cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    out[i] = _colour_jitter(image, aug, saturation_matrix)
  return out


@dataclasses.dataclass(frozen=True)
class Options:
  """Which fine-tuning augmentations run (config ``augment``, whose ``configs.common`` holds the
  spec's values): the widest masks in mel bins / 10 ms frames (the spec's 20 / 100 are for the
  128 × 1024 input; smaller models scale them with their input), ``video`` (the whole video
  chain) and ``audio`` (masks and noise)."""
  freq_mask: int
  time_mask: int
  video: bool = True
  audio: bool = True


def augment_video(rng: np.random.Generator, frames: np.ndarray) -> np.ndarray:
  """Draws one augmentation and applies it to a uint8 [T, H, W, 3] RGB clip; same shape out."""
  frames = np.asarray(frames)
  return apply_video_augmentation(frames, draw_video_augmentation(rng, *frames.shape[1:3]))


def _mask_span(rng: np.random.Generator, size: int, max_width: int) -> Tuple[int, int]:
  """torchaudio's ``mask_along_axis``: width v ~ U(0, max_width) and start ~ U(0, size − v), both
  floored; returns (start, width) with start + width ≤ size. max_width is capped at size."""
  value = rng.uniform(0, min(max_width, size))
  start = rng.uniform(0, size - value)
  return int(start), int(value)


def mask_fbank(rng: np.random.Generator, fbank: np.ndarray, freq_mask: int,
               time_mask: int) -> np.ndarray:
  """One frequency mask (< ``freq_mask`` bins) then one time mask (< ``time_mask`` frames), set
  to 0.

  fbank: [T, F] log-mel filterbank before normalisation (spec §11: masked cells are 0 before
  normalising), as torchaudio's FrequencyMasking(20) and TimeMasking(100). Returns a new float32
  [T, F] array.
  """
  fbank = np.array(fbank, dtype=np.float32)
  if fbank.ndim != 2:
    raise ValueError(f"want a [T, F] filterbank, got shape {fbank.shape}")
  num_frames, num_bins = fbank.shape
  start, width = _mask_span(rng, num_bins, freq_mask)
  fbank[:, start:start + width] = 0
  start, width = _mask_span(rng, num_frames, time_mask)
  fbank[start:start + width] = 0
  return fbank


def add_noise(rng: np.random.Generator, features: np.ndarray) -> np.ndarray:
  """With probability NOISE_PROB, features + U(0,1)·rand(T, F)/10: one uniform scale per clip
  times a fresh uniform field, so every cell rises by [0, 0.1). Otherwise an unchanged copy.

  features: the normalised [T, F] audio input. Returns a new float32 array of the same shape.
  """
  features = np.array(features, dtype=np.float32)
  if rng.random() < NOISE_PROB:
    scale = np.float32(rng.random() * NOISE_SCALE)
    features += scale * rng.random(features.shape, dtype=np.float32)
  return features
