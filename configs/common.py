"""Shared config pieces: the spec's training constants (HAVIC.md §5, §8, §11), each once.

Config files (``pretrain_base.py`` ...) assemble these with their sizes; model sizes default to
the paper's base model (``havic_jax.models.config.ModelConfig``).
"""

import dataclasses

import ml_collections

from havic_jax.data import augment, pseudo_fakes
from havic_jax import detectors
from havic_jax.models.config import ModelConfig


def model_config(**overrides) -> ml_collections.ConfigDict:
  """The model section: base-model sizes from ``ModelConfig`` with ``overrides``.

  ``audio_segments=None`` means "follow ``config.compat``"."""
  values = dataclasses.asdict(ModelConfig())
  values["audio_segments"] = None
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def mesh_and_rules(config: ml_collections.ConfigDict) -> None:
  """Device mesh (-1 takes the remaining devices) and logical-axis -> mesh-axis rules."""
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.sharding_rules = (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("qkv", "tensor"),
      ("act_heads", "tensor"),
      ("layers", None),  # the stacked layer axis of scanned encoder blocks (models.stacking)
  )


def data_config(stage: str) -> ml_collections.ConfigDict:
  """Where batches come from (``havic_jax.training.loop.training_batches``).

  source: "prepared" (shards of ``data_pipelines.prepare`` in ``path``), "synthetic_corpus"
  (generate the synthetic FakeAVCeleb-like corpus and prepare it under ``path``, default
  WORKDIR/synthetic_data, unless already there) or "random" (random arrays; ``fixed_batch``
  repeats one batch). split: the manifest split to train on ("" = every clip).
  """
  return ml_collections.ConfigDict({
      "source": "prepared",
      "path": "",
      "split": "" if stage == "pretrain" else "train",
      "eval_split": "test",
      "workers": 0,               # Grain worker processes (0: decode in the training process)
      "balanced": stage == "finetune",  # class-balanced weighted sampling (spec §11)
      "synthetic_videos": 16,
      "fixed_batch": False,
      # Detectors that learn identities (see havic_jax.detectors): real clips only, batches of
      # identities × `clips_per_identity` clips of different videos (0: plain shuffling).
      "real_only": False,
      "clips_per_identity": 0,
      # Pretraining only: other prepared data mixed in, "DIR:SHARE[,DIR:SHARE]", each DIR's
      # clips making up SHARE of the samples (e.g. out-of-domain clips prepared with
      # `--dataset=folder --crop=centre`, as FakeOut pretrains).
      "mixture": "",
  })


def base_config(stage: str) -> ml_collections.ConfigDict:
  """Everything but the sizes, for ``stage`` = "pretrain" or "finetune"."""
  config = ml_collections.ConfigDict()
  config.stage = stage
  # "reference" reproduces the released code; "paper" follows the paper where they differ
  # (time segments for audio, reconstruction loss on masked tokens only).
  config.compat = "reference"
  config.seed = 0
  config.num_steps = 1000
  config.log_every = 10
  # Gradient accumulation: each step runs the batch as this many microbatches in sequence
  # (activation memory of batch_size / grad_accumulation_steps samples).
  config.grad_accumulation_steps = 1
  config.data = data_config(stage)
  config.detector = detectors.detector_options()
  # Orbax checkpoints in WORKDIR/checkpoints: an async save every `every_steps` (and at the
  # end, and on SIGTERM); keep the last `keep` plus the best `keep_best` by `best_metric`.
  config.checkpoint = ml_collections.ConfigDict({
      "every_steps": 500, "keep": 2, "keep_best": 1,
      "best_metric": "" if stage == "pretrain" else "eval/auc", "best_mode": "max",
  })
  # Pretraining: input / masked / reconstructed images of one sample every `image_every` steps.
  config.image_every = 1000 if stage == "pretrain" else 0
  # Fine-tuning: validation (ACC/AP/AUC on data.eval_split) every `eval_every` steps (0: off).
  config.eval_every = 0 if stage == "pretrain" else 500
  # Fine-tuning starts from a pretraining workdir or an export (python -m havic_jax.export).
  config.init_from = ""
  mesh_and_rules(config)

  config.optimizer = ml_collections.ConfigDict({
      "b1": 0.95, "b2": 0.999, "weight_decay": 0.05, "grad_clip_norm": 1.0,
  })
  if stage == "pretrain":
    config.optimizer.update({
        "peak_learning_rate": 1.5e-4,
        # "onecycle" (released code: 10 % warm-up from peak/25, cosine to peak/25e4, per
        # step) or "warmup_cosine" (paper: linear warm-up then cosine to zero).
        "schedule": "onecycle",
        "warmup_fraction": 0.1,
        "onecycle_div_factor": 25.0,
        "onecycle_final_div_factor": 1e4,
    })
    config.pretrain = ml_collections.ConfigDict({
        "video_mask_ratio": 0.9,      # tube masking (§5)
        "audio_mask_ratio": 0.8125,   # per segment (§5)
        "temperature": 0.07,          # contrastive τ (§8)
        "loss_weights": {"reconstruction": 1.0, "contrastive": 0.01, "cross_modal": 1.0},
        # None follows compat: all tokens (reference) or masked tokens only (paper).
        "reconstruction_masked_only": None,
    })
  else:
    # Fine-tuning augmentations (spec §11, havic_jax.data.augment): the video chain, the audio masks
    # and noise, and the widest masks (mel bins, 10 ms frames) for the 128 × 1024 input.
    config.augment = ml_collections.ConfigDict({
        "video": True, "audio": True,
        "freq_mask": augment.FREQ_MASK, "time_mask": augment.TIME_MASK,
    })
    # Temporally-local pseudo-fakes (fine-grained detector; havic_jax.data.pseudo_fakes).
    config.pseudo_fakes = ml_collections.ConfigDict({
        "enabled": False, "probability": pseudo_fakes.PROBABILITY, "r_min": pseudo_fakes.R_MIN,
        "r_max": pseudo_fakes.R_MAX, "min_units": pseudo_fakes.MIN_UNITS,
    })
    config.optimizer.update({
        "pretrained_learning_rate": 1e-5,  # encoders + interaction module
        "new_learning_rate": 1e-4,         # reducers, pools, classifiers
        "restart_every_steps": 500,        # cosine warm restarts (10 epochs in the paper)
        "learning_rate_floor": 1e-9,
    })
  return config
