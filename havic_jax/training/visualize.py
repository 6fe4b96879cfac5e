"""Pretraining reconstruction images (pure NumPy, on the host): input, masked input and the
decoder's reconstruction of one sample, as uint8 images for ``MetricWriter.write_images``.

What to pass as the reconstruction: ``HAVICPretrain`` returns one reconstruction per decoder
block (``outputs["video_recon"]``, ``outputs["audio_recon"]``, each [B, N, patch_dim]). The
blocks are hierarchical (block b attends to the encoder taps from the deepest downwards,
starting b places in) and every head has the same target, so the last head, the output of
the whole decoder stack, is the one shown: ``outputs["video_recon"][-1][b]``.

Units: the targets are the raw patches (``patchify_video`` of [0, 1] pixels and
``patchify_audio`` of the normalised fbank; there is no per-patch normalisation, no
``norm_pix_loss``), so the reconstruction is shown as the model predicts it, on the input's
scale: pixels clipped to [0, 1], fbank values through the colormap on the input's range. With
``pretrain.reconstruction_masked_only`` (``compat="paper"``) only masked tokens are trained, so
the visible tokens of the reconstruction row carry no meaning.

Patches are mapped back to frames and spectrograms through the patchify functions of
``models/patches.py`` (the token order and patch layout are defined there only).
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence

import matplotlib
import numpy as np

from havic_jax.models.config import ModelConfig
from havic_jax.models.patches import patchify_audio, patchify_video

GREY = 0.5  # masked tokens in the "masked input" rows, on the [0, 1] display scale
GAP = 2  # white pixels between rows and between frames
COLORMAP = "viridis"


@functools.lru_cache(maxsize=8)
def _video_source_index(model_config: ModelConfig) -> np.ndarray:
  """[N_v, P_v] flat index into a [F, H, W, 3] video of every patch value (patchify applied
  to the indices themselves)."""
  shape = (1, model_config.num_frames, model_config.image_size, model_config.image_size, 3)
  return np.asarray(patchify_video(np.arange(np.prod(shape), dtype=np.int32).reshape(shape),
                                   model_config))[0]


@functools.lru_cache(maxsize=8)
def _audio_source_index(model_config: ModelConfig) -> np.ndarray:
  """[N_a, P_a] flat index into a [time, mel] fbank of every patch value."""
  shape = (1, model_config.audio_frames, model_config.mel_bins)
  return np.asarray(patchify_audio(np.arange(np.prod(shape), dtype=np.int32).reshape(shape),
                                   model_config))[0]


def _unpatchify(patches: np.ndarray, index: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """Inverse of a patchify given its source index: [N, P] patches -> array of ``shape``."""
  out = np.empty(index.size, patches.dtype)
  out[index.reshape(-1)] = np.asarray(patches).reshape(-1)
  return out.reshape(shape)


def _masked_tokens(ids_keep: np.ndarray, num_tokens: int, patch_dim: int) -> np.ndarray:
  """[K] kept token ids -> [N, P] bool, True on every value of a masked token."""
  masked = np.ones(num_tokens, bool)
  masked[np.asarray(ids_keep)] = False
  return np.broadcast_to(masked[:, None], (num_tokens, patch_dim))


def _stack(images: Sequence[np.ndarray], axis: int) -> np.ndarray:
  """Float [h, w, 3] images joined along ``axis`` (0: rows, 1: columns) with white gaps."""
  gap_shape = list(images[0].shape)
  gap_shape[axis] = GAP
  gap = np.ones(gap_shape, images[0].dtype)
  parts = [part for image in images for part in (gap, image)][1:]
  return np.concatenate(parts, axis=axis)


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _colour(fbank: np.ndarray, low: float, high: float) -> np.ndarray:
  """[T, M] fbank -> [M, T, 3] colormap image of (fbank − low) / (high − low), clipped; mel
  bin 0 at the bottom."""
  scaled = np.clip((fbank.T[::-1] - low) / ((high - low) or 1.0), 0.0, 1.0)
  return matplotlib.colormaps[COLORMAP](scaled)[..., :3]


def video_panel(video: np.ndarray, ids_keep: np.ndarray, reconstruction: np.ndarray,
                model_config: ModelConfig, frames: Optional[Sequence[int]] = None) -> np.ndarray:
  """Rows input / masked input (masked tubelets grey) / reconstruction, one column per frame.

  video: [F, H, W, 3] float in [0, 1] (uint8 pixels are divided by 255); ids_keep: [K_v]
  kept video token ids; reconstruction: [N_v, 3·pt·p·p] patches (``patchify_video`` layout);
  frames: frame indices to show, by default the first frame of each tubelet time slice.
  Returns uint8 [3·H + 2·GAP, n·W + (n − 1)·GAP, 3] for n frames.
  """
  video = np.asarray(video)
  video = video / 255.0 if video.dtype == np.uint8 else video.astype(np.float32)
  index = _video_source_index(model_config)
  masked = _unpatchify(
      _masked_tokens(ids_keep, model_config.video_tokens, model_config.video_patch_dim), index,
      video.shape)
  rows = (video, np.where(masked, GREY, video),
          _unpatchify(np.asarray(reconstruction, np.float32), index, video.shape))
  frames = range(0, model_config.num_frames,
                 model_config.tubelet_size) if frames is None else frames
  return _to_uint8(_stack([_stack([row[f] for f in frames], axis=1) for row in rows], axis=0))


def spectrogram_panel(audio: np.ndarray, ids_keep: np.ndarray, reconstruction: np.ndarray,
                      model_config: ModelConfig) -> np.ndarray:
  """Rows input / masked input (masked patches grey) / reconstruction of the fbank, time
  left to right and the lowest mel bin at the bottom, through the colormap on the input's
  [min, max] (the reconstruction is clipped to it).

  audio: [T, M] normalised fbank; ids_keep: [K_a] kept audio token ids (configured token
  order); reconstruction: [N_a, p·p] patches (``patchify_audio`` layout).
  Returns uint8 [3·M + 2·GAP, T, 3].
  """
  audio = np.asarray(audio, np.float32)
  index = _audio_source_index(model_config)
  masked = _unpatchify(
      _masked_tokens(ids_keep, model_config.audio_tokens, model_config.audio_patch_dim), index,
      audio.shape)
  reconstructed = _unpatchify(np.asarray(reconstruction, np.float32), index, audio.shape)
  low, high = float(audio.min()), float(audio.max())
  coloured = _colour(audio, low, high)
  rows = (coloured, np.where(masked.T[::-1, :, None], GREY, coloured),
          _colour(reconstructed, low, high))
  return _to_uint8(_stack(rows, axis=0))


def reconstruction_images(video: np.ndarray, audio: np.ndarray, ids_keep_video: np.ndarray,
                          ids_keep_audio: np.ndarray, video_reconstruction: np.ndarray,
                          audio_reconstruction: np.ndarray, model_config: ModelConfig
                          ) -> Dict[str, np.ndarray]:
  """One sample's ``{"video": video_panel(...), "spectrogram": spectrogram_panel(...)}``.

  video [F, H, W, 3], audio [T, M]: the model inputs; ids_keep_video [K_v], ids_keep_audio
  [K_a]: its masks; video_reconstruction [N_v, P_v], audio_reconstruction [N_a, P_a]: the last
  decoder head, e.g. ``outputs["video_recon"][-1][b]``.
  """
  return {
      "video": video_panel(video, ids_keep_video, video_reconstruction, model_config),
      "spectrogram": spectrogram_panel(audio, ids_keep_audio, audio_reconstruction, model_config)
  }
