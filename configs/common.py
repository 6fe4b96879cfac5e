"""Shared config pieces, each value once: the model sizes, the spec's training constants
(HAVIC.md §5, §8, §11), the detector options, the mesh; and the argument parser of the config
files.

Config files take ``k=v,k=v`` arguments after a colon (``ml_collections.config_flags`` passes the
text after ':' to ``get_config``), e.g. ``--config=configs/havic.py:stage=pretrain,size=base``.
Every detector file (``havic.py``, ``consistency.py``, ``voice_face.py``, ``fine_grained.py``,
``fakeout.py``) takes ``stage`` and ``size`` and returns :func:`detector_config`. Configs import
only ``ml_collections``, the standard library and this module.
"""

from typing import Any, Optional, Sequence

import ml_collections

STAGES = ("pretrain", "finetune")

# The paper's base model (spec §1–§9), every ``havic_jax.models.config.ModelConfig`` field.
# ModelConfig's field defaults hold the same values because they fill the fields a config.json
# or export written before a field existed lacks; tests/test_configs.py checks that these sizes
# build exactly ``ModelConfig()``.
BASE_MODEL = {
    # Video input (spec §1-§2): [B, num_frames, image_size, image_size, 3] in [0, 1].
    "num_frames": 16, "image_size": 224, "patch_size": 16, "tubelet_size": 2,
    # Audio input: normalised fbank [B, audio_frames (10 ms frames), mel_bins].
    "audio_frames": 1024, "mel_bins": 128, "audio_patch_size": 16,
    # Temporal segments T per stream (spec §2); audio_segments None follows config.compat
    # ("reference": frequency bands, "paper": time segments).
    "num_segments": 8, "audio_segments": None,
    # Encoders (spec §4).
    "width": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0, "tap_layers": (3, 6, 9, 12),
    "video_drop_path": 0.1, "audio_drop_path": 0.0, "layer_norm_eps": 1e-5,
    # Audio-visual interaction module (spec §6).
    "interaction_heads": 8,
    # Hierarchical reconstruction decoders (spec §7).
    "decoder_width": 384, "decoder_depth": 4, "decoder_heads": 6,
    "video_decoder_drop_path": 0.1, "audio_decoder_drop_path": 0.0,
    # Cross-modal semantic decoders (spec §7).
    "cross_decoder_heads": 12,
    # Fine-tuning heads (spec §9).
    "reducer_hidden": 128, "classifier_hidden": (1536, 768), "classifier_dropout": (0.1, 0.2),
    # Numerics, memory and compilation: attention_impl is the attention kernel ("auto":
    # cuDNN flash attention for bfloat16 on GPUs, Pallas flash attention on TPUs, XLA
    # elsewhere; or "xla", "cudnn", "pallas"); remat_policy names a jax.checkpoint_policies
    # entry (used when remat); scan_layers runs the encoder blocks between taps as one nn.scan.
    "dtype": "float32", "attention_impl": "auto", "remat": False,
    "remat_policy": "nothing_saveable", "scan_layers": False,
}
# The tiny model (tests, demo): 16 frames of 32×32 (8×4×4 video tokens), 128×64 fbank (8×16
# audio tokens), width 64, two encoder layers tapped after layers 1 and 2, two decoder blocks.
TINY_MODEL = dict(
    BASE_MODEL, image_size=32, patch_size=8, audio_frames=128, mel_bins=64, audio_patch_size=8,
    width=64, depth=2, num_heads=4, tap_layers=(1, 2), interaction_heads=4,
    cross_decoder_heads=4, decoder_width=32, decoder_depth=2, decoder_heads=2,
    reducer_hidden=16, classifier_hidden=(64, 32))
MODELS = {"tiny": TINY_MODEL, "base": BASE_MODEL}
SIZES = tuple(MODELS)

# ``config.detector``: the detector's name (``havic_jax.detectors.DETECTORS``) and options.
# embed_dim: embedding width of the consistency and voice–face spaces; num_identities: identity
# classes of the voice–face pretraining heads (0: the training loop counts the training data's
# identities); dropout: of the FakeOut MLP.
DETECTOR_OPTIONS = {"name": "havic", "embed_dim": 128, "num_identities": 0, "dropout": 0.0}

# Fine-tuning augmentations (spec §11, havic_jax.data.augment) at the base input size: the
# widest masks, floor(U(0, 20)) mel bins and floor(U(0, 100)) frames of 10 ms.
FREQ_MASK = 20
TIME_MASK = 100
# Temporally-local pseudo-fakes (havic_jax.data.pseudo_fakes): the share of clips that become
# pseudo-fakes, the shortest / longest span as a share of the clip's units (video frames) and
# the shortest span in units whatever r_min gives.
PSEUDO_FAKES = {"probability": 0.5, "r_min": 0.0, "r_max": 1.0, "min_units": 2}

# The paper's recipe (spec §11): the global batch its learning rates are tuned for, and the
# run length, warm-up and restarts in epochs of the training data.
REFERENCE_BATCH_SIZE = {"pretrain": 112, "finetune": 32}
PAPER_EPOCHS = {"pretrain": 200.0, "finetune": 50.0}
PRETRAIN_WARMUP_EPOCHS = 20.0
FINETUNE_RESTART_EPOCHS = 10.0
# How the learning rates follow the global batch (havic_jax.training.run_length.LR_SCALINGS).
LR_SCALING = "sqrt"
# The tiny model's batch, which its learning rates (tiny_optimizer) are tuned for.
TINY_BATCH_SIZE = 8

GRAD_REDUCE_DTYPE = "float32"
# Across-slice (DCN) sizes of the mesh axes of a run over several TPU slices: each axis is
# its within-slice size times this; -1 takes the slices (1 on one slice). Data parallelism
# across slices keeps the slow network to the gradient all-reduce.
DCN_MESH = {"dcn_data": -1, "dcn_fsdp": 1, "dcn_tensor": 1}
# The mesh axes (data, fsdp, tensor) batches are split over.
BATCH_AXES = ("data", "fsdp")


def parse_arg(arg: Optional[str], **defaults: Any) -> ml_collections.ConfigDict:
  """``"k=v,k=v"`` (``get_config``'s argument; None or "" for none) -> a ConfigDict of the
  ``defaults``' keys, each value converted to its default's type (bool: "true"/"false")."""
  values = dict(defaults)
  for token in filter(None, (arg or "").split(",")):
    key, sep, text = token.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"config argument {token!r}: expected k=v with k one of "
                       f"{sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      if text.lower() not in ("true", "false"):
        raise ValueError(f"config argument {key} takes true or false, got {text!r}")
      values[key] = text.lower() == "true"
    else:
      values[key] = kind(text)
  return ml_collections.ConfigDict(values)


def one_of(name: str, value: str, choices: Sequence[str]) -> str:
  """``value`` if it is in ``choices`` (else ValueError naming the config argument)."""
  if value not in choices:
    raise ValueError(f"config argument {name} must be one of {tuple(choices)}, got {value!r}")
  return value


# The type of every field whose default is None ("not set": another field decides), so that
# the command line can set it (``--config.model.audio_segments=time``): such fields are
# ml_collections placeholders, None-valued fields of a known type.
OPTIONAL_FIELDS = {"audio_segments": str, "reconstruction_masked_only": bool,
                   "num_steps": int, "num_epochs": float, "warmup_steps": int,
                   "warmup_epochs": float, "restart_every_steps": int,
                   "restart_every_epochs": float}


def with_placeholders(values: dict) -> ml_collections.ConfigDict:
  """``values`` as a ConfigDict whose None values (keys of ``OPTIONAL_FIELDS``) are typed
  placeholders."""
  return ml_collections.ConfigDict({
      key: (ml_collections.config_dict.placeholder(OPTIONAL_FIELDS[key])
            if value is None else value) for key, value in values.items()})


def model_config(size: str = "base", **overrides: Any) -> ml_collections.ConfigDict:
  """The model section: ``MODELS[size]`` with ``overrides``."""
  return with_placeholders(dict(MODELS[one_of("size", size, SIZES)], **overrides))


def mesh_and_rules(config: ml_collections.ConfigDict) -> None:
  """Device mesh (-1 takes the remaining devices; batches split over ``batch_axes``) and
  logical-axis -> mesh-axis rules (the ``batch`` activations on the same axes)."""
  config.mesh = ml_collections.ConfigDict(
      {"data": -1, "fsdp": 1, "tensor": 1, "batch_axes": BATCH_AXES, **DCN_MESH})
  config.sharding_rules = (
      ("batch", BATCH_AXES),
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
      # Grain's read-ahead (per process, and per worker process): threads decoding batches and
      # the batches decoded ahead of the step. Grain's own default, 500 batches, would hold
      # ≈ 140 GB of base-size batches of 112 (uint8 video) and keep a small host's cores busy
      # on batches no step takes. Each thread decodes one batch ahead, so Grain uses at most
      # prefetch_batches threads (and warns when read_threads is larger).
      "read_threads": 4,
      "prefetch_batches": 4,
      # Batches put on the devices ahead of the step (training.prefetch.DevicePrefetch): the
      # next step's transfer overlaps the running step (0: each batch is sent when its step
      # starts).
      "device_prefetch": 2,
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
  """Everything but the sizes and the run length, for ``stage`` = "pretrain" or "finetune"."""
  one_of("stage", stage, STAGES)
  config = ml_collections.ConfigDict()
  config.stage = stage
  # "reference" reproduces the released code; "paper" follows the paper where they differ
  # (time segments for audio, reconstruction loss on masked tokens only).
  config.compat = "reference"
  config.seed = 0
  # The run's length (havic_jax.training.run_length): num_epochs passes over the training
  # clips (the split's, plus every mixture component's) at the global batch_size, or
  # num_steps, which overrides it where set.
  config.update(with_placeholders({"num_epochs": None, "num_steps": None}))
  # A resumed run keeps the run length, warm-up or restarts and learning rates of its
  # config.json; True derives them again from today's data and batch (both logged).
  config.reschedule = False
  config.log_every = 10
  # Gradient accumulation: each step runs the batch as this many microbatches in sequence
  # (activation memory of batch_size / grad_accumulation_steps samples).
  config.grad_accumulation_steps = 1
  # The dtype gradients are summed over the batch and reduced across devices in: "float32"
  # (the layers return float32 weight gradients whatever model.dtype computes in) or
  # "bfloat16" (differentiated at bfloat16 copies of the parameters: half the all-reduce
  # bytes; BENCHMARKS.md, gradient reduction).
  config.grad_reduce_dtype = GRAD_REDUCE_DTYPE
  config.data = data_config(stage)
  config.detector = ml_collections.ConfigDict(DETECTOR_OPTIONS)
  # Orbax checkpoints in WORKDIR/checkpoints: an async save every `every_steps` (and at the
  # end, and on SIGTERM); keep the last `keep` plus the best `keep_best` by `best_metric`.
  config.checkpoint = ml_collections.ConfigDict({
      "every_steps": 500, "keep": 2, "keep_best": 1,
      "best_metric": "" if stage == "pretrain" else "eval/auc", "best_mode": "max",
  })
  # A jax.profiler trace of `steps` steps from `start_step` (-1: none) on process 0, written
  # to `dir` (default WORKDIR/profile; tensorboard --logdir=DIR, Profile tab).
  config.profile = ml_collections.ConfigDict({"start_step": -1, "steps": 3, "dir": ""})
  # Pretraining: input / masked / reconstructed images of one sample every `image_every` steps.
  config.image_every = 1000 if stage == "pretrain" else 0
  # Fine-tuning: validation (ACC/AP/AUC on data.eval_split) every `eval_every` steps (0: off).
  config.eval_every = 0 if stage == "pretrain" else 500
  # Fine-tuning starts from a pretraining workdir or an export (python -m havic_jax.export).
  config.init_from = ""
  mesh_and_rules(config)

  # The learning rates below are tuned for reference_batch_size samples per step and follow
  # the global batch_size by lr_scaling: "none", "linear" (× batch / reference) or "sqrt".
  config.optimizer = ml_collections.ConfigDict({
      "b1": 0.95, "b2": 0.999, "weight_decay": 0.05, "grad_clip_norm": 1.0,
      "lr_scaling": LR_SCALING,
      "reference_batch_size": REFERENCE_BATCH_SIZE[stage],
  })
  if stage == "pretrain":
    config.optimizer.update({
        "peak_learning_rate": 1.5e-4,
        # "onecycle" (released code: warm-up from peak/25, cosine to peak/25e4, per step) or
        # "warmup_cosine" (paper: linear warm-up then cosine to zero).
        "schedule": "onecycle",
        "onecycle_div_factor": 25.0,
        "onecycle_final_div_factor": 1e4,
        # The warm-up: warmup_steps where set, else warmup_epochs, else warmup_fraction of
        # the run.
        "warmup_fraction": 0.1,
    })
    config.optimizer.update(with_placeholders({"warmup_epochs": None, "warmup_steps": None}))
    config.pretrain = with_placeholders({
        "video_mask_ratio": 0.9,      # tube masking (§5)
        "audio_mask_ratio": 0.8125,   # per segment (§5)
        "temperature": 0.07,          # contrastive τ (§8)
        "loss_weights": {"reconstruction": 1.0, "contrastive": 0.01, "cross_modal": 1.0},
        # None follows compat: all tokens (reference) or masked tokens only (paper).
        "reconstruction_masked_only": None,
    })
  else:
    # The video chain, the audio masks and noise (havic_jax.data.augment).
    config.augment = ml_collections.ConfigDict({
        "video": True, "audio": True, "freq_mask": FREQ_MASK, "time_mask": TIME_MASK,
    })
    # Temporally-local pseudo-fakes (fine-grained detector; havic_jax.data.pseudo_fakes).
    config.pseudo_fakes = ml_collections.ConfigDict(dict(PSEUDO_FAKES, enabled=False))
    config.optimizer.update({
        "pretrained_learning_rate": 1e-5,  # encoders + interaction module
        "new_learning_rate": 1e-4,         # reducers, pools, classifiers
        "learning_rate_floor": 1e-9,
    })
    # Cosine warm restarts: every restart_every_steps where set, else restart_every_epochs.
    config.optimizer.update(with_placeholders({"restart_every_epochs": None,
                                               "restart_every_steps": None}))
  return config


def havic_config(stage: str, size: str) -> ml_collections.ConfigDict:
  """HAVIC's ``stage`` with the ``size`` model and its run: "base" at the paper's batch sizes
  and lengths, "tiny" in seconds on a CPU on the synthetic corpus the project generates."""
  config = base_config(stage)
  config.model = model_config(size)
  if size == "base":
    config.batch_size = REFERENCE_BATCH_SIZE[stage]
    config.num_epochs = PAPER_EPOCHS[stage]
    if stage == "pretrain":
      config.optimizer.warmup_epochs = PRETRAIN_WARMUP_EPOCHS
    else:
      config.optimizer.restart_every_epochs = FINETUNE_RESTART_EPOCHS
    return config
  config.batch_size = TINY_BATCH_SIZE
  config.optimizer.reference_batch_size = TINY_BATCH_SIZE
  config.num_steps = 20
  config.log_every = 1
  config.data.source = "synthetic_corpus"
  if stage == "finetune":  # the audio masks keep their share of the smaller fbank
    config.augment.freq_mask = FREQ_MASK * config.model.mel_bins // BASE_MODEL["mel_bins"]
    config.augment.time_mask = (TIME_MASK * config.model.audio_frames
                                // BASE_MODEL["audio_frames"])
  tiny_optimizer(config)
  return config


def tiny_optimizer(config: ml_collections.ConfigDict) -> None:
  """Learning rates for the tiny model. Fine-tuning: at 32×32 the tiny model learns the
  synthetic fakes' visual traces within a few hundred CPU steps only without classifier
  dropout, weight decay and the video augmentations; the base configs keep the spec's values."""
  if config.stage == "pretrain":
    config.optimizer.peak_learning_rate = 1e-3
    return
  config.optimizer.restart_every_steps = 400
  config.optimizer.pretrained_learning_rate = 3e-4
  config.optimizer.new_learning_rate = 3e-3
  config.model.classifier_dropout = (0.0, 0.0)
  config.optimizer.weight_decay = 0.0
  config.augment.video = False


def detector_config(name: str, stage: str, size: str) -> ml_collections.ConfigDict:
  """Detector ``name``'s ``stage`` at ``size`` (``havic_config``'s model, optimiser and run).
  The detectors other than HAVIC train on the train split with validation AUC on the test
  split (every 100 steps tiny, 500 base) and keep the best checkpoint by it."""
  config = havic_config(stage, size)
  config.detector.name = name
  if name != DETECTOR_OPTIONS["name"]:
    config.data.split = "train"
    config.eval_every = 100 if size == "tiny" else 500
    config.checkpoint.best_metric = "eval/auc"
    config.image_every = 0
  return config


def detector_args(arg: Optional[str], stages: Sequence[str]) -> ml_collections.ConfigDict:
  """A detector file's arguments ``stage`` (one of ``stages``, default the first) and
  ``size`` (one of ``SIZES``, default "base")."""
  args = parse_arg(arg, stage=stages[0], size="base")
  one_of("stage", args.stage, stages)
  one_of("size", args.size, SIZES)
  return args
