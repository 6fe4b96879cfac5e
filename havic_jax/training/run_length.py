"""A run's length and learning rates, derived from its config, its data and its batch.

The configs may count the run, the pretraining warm-up and the fine-tuning restarts in
epochs (``num_epochs``, ``optimizer.warmup_epochs``, ``optimizer.restart_every_epochs``), as
the paper gives them, or in steps (``num_steps``, ``optimizer.warmup_steps``,
``optimizer.restart_every_steps``); a step count, where set, overrides its epoch count. An
epoch is one pass over the clips a run trains on (:func:`training_clips`): ``steps = ceil(epochs
× clips / batch_size)``, where ``batch_size`` is the global batch of one optimiser step (with
gradient accumulation, all of its microbatches). Random batches have no epochs; they count one
batch as one (``builder.with_run_length``).

The peak learning rates are given for ``optimizer.reference_batch_size`` and follow the batch
by ``optimizer.lr_scaling``: "none", "linear" (× batch / reference) or "sqrt" (× its square
root).

:func:`resolve` writes the derived values into a copy of the config (``num_steps``, the
warm-up or restart steps) and adds its ``schedule`` section (clips and steps per epoch, the
scale and the learning rates used), which the run logs and writes to ``config.json``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import ml_collections
from absl import logging

from havic_jax.data import input_pipeline, records
from havic_jax.errors import UserError

LR_SCALINGS = ("none", "linear", "sqrt")
# The learning rates each stage's optimiser scales with the batch (its config.optimizer keys).
LEARNING_RATES = {"pretrain": ("peak_learning_rate",),
                  "finetune": ("pretrained_learning_rate", "new_learning_rate")}


class RunLengthError(UserError):
  """A config whose run length or learning rate cannot be derived."""


def training_clips(data: records.PreparedData, config: Any, real_only: bool) -> int:
  """The clips one epoch of ``config`` passes over: those of ``config.data.split`` of
  ``data`` (``real_only``: its real clips), plus every clip of each ``config.data.mixture``
  component."""
  indices = data.split_indices(config.data.split or None)
  if real_only:
    indices = data.real_indices(indices)
  mixed = sum(records.open_prepared(path).num_records
              for path, _ in input_pipeline.parse_mixture(config.data.get("mixture", "")))
  return int(len(indices) + mixed)


def learning_rate_scale(scaling: str, batch_size: int, reference_batch_size: int) -> float:
  """The factor on the learning rates tuned at ``reference_batch_size`` for ``batch_size``."""
  if scaling not in LR_SCALINGS:
    raise RunLengthError(f"optimizer.lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}")
  if reference_batch_size <= 0:
    raise RunLengthError(f"optimizer.reference_batch_size must be positive, got "
                         f"{reference_batch_size}")
  ratio = batch_size / reference_batch_size
  return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def steps_of(steps: Optional[int], epochs: Optional[float], steps_per_epoch: float
             ) -> Optional[int]:
  """``steps`` where set, else ``ceil(epochs × steps_per_epoch)`` (at least 1), else None."""
  if steps is not None:
    return int(steps)
  if epochs is None:
    return None
  return max(1, math.ceil(epochs * steps_per_epoch - 1e-9))


def resolve(config: Any, clips: int) -> ml_collections.ConfigDict:
  """A copy of ``config`` with its run length in steps and its ``schedule`` section, for an
  epoch of ``clips`` clips.

  Sets ``num_steps``, and ``optimizer.warmup_steps`` (pretraining: else
  ``optimizer.warmup_fraction`` of the run) or ``optimizer.restart_every_steps``
  (fine-tuning). ``schedule``: ``clips_per_epoch``, ``steps_per_epoch``,
  ``learning_rate_scale`` and ``learning_rates`` ({config.optimizer key: the value used}).
  A config that has its ``schedule`` (a resumed run's, :func:`resume_schedule`) keeps it."""
  config = config.copy_and_resolve_references()
  config.unlock()
  if config.get("schedule") is not None:
    return config
  opt = config.optimizer
  steps_per_epoch = clips / config.batch_size
  num_steps = steps_of(config.num_steps, config.get("num_epochs"), steps_per_epoch)
  if num_steps is None:
    raise RunLengthError("the config gives neither num_epochs nor num_steps; set "
                         "--config.num_epochs=E or --config.num_steps=N")
  config.num_steps = num_steps
  if config.stage == "pretrain":
    warmup = steps_of(opt.warmup_steps, opt.warmup_epochs, steps_per_epoch)
    opt.warmup_steps = (max(1, int(opt.warmup_fraction * num_steps)) if warmup is None
                        else min(warmup, num_steps))
  else:
    restart = steps_of(opt.restart_every_steps, opt.restart_every_epochs, steps_per_epoch)
    if restart is None:
      raise RunLengthError("fine-tuning needs optimizer.restart_every_epochs or "
                           "optimizer.restart_every_steps")
    opt.restart_every_steps = restart
  scale = learning_rate_scale(opt.lr_scaling, config.batch_size, opt.reference_batch_size)
  config.schedule = ml_collections.ConfigDict({
      "clips_per_epoch": clips, "steps_per_epoch": steps_per_epoch,
      "learning_rate_scale": scale,
      "learning_rates": {key: opt[key] * scale for key in LEARNING_RATES[config.stage]}})
  return config


def describe(config: Any) -> str:
  """One line on a resolved config's schedule, for the start-up log."""
  schedule, opt = config.schedule, config.optimizer
  per_epoch = (f"{schedule.clips_per_epoch} clips per epoch, "
               f"{schedule.steps_per_epoch:.2f} steps per epoch")
  length = (f"warm-up {opt.warmup_steps} steps" if config.stage == "pretrain" else
            f"restarts every {opt.restart_every_steps} steps")
  rates = ", ".join(f"{key} {value:.4g}" for key, value in schedule.learning_rates.items())
  return (f"schedule: batch {config.batch_size}, {per_epoch}, {config.num_steps} steps, "
          f"{length}; learning rates ×{schedule.learning_rate_scale:.4g} ({opt.lr_scaling} "
          f"from batch {opt.reference_batch_size}): {rates}")


def changes(previous: Dict[str, Any], current: Dict[str, Any]) -> Dict[str, Any]:
  """{key: (previous, current)} of the schedule values that differ between two resolved
  configs' JSON dicts (``num_steps``, the optimiser's step counts, the ``schedule`` section)."""
  def values(config):
    opt = config.get("optimizer", {})
    return {"num_steps": config.get("num_steps"),
            "optimizer.warmup_steps": opt.get("warmup_steps"),
            "optimizer.restart_every_steps": opt.get("restart_every_steps"),
            **{f"schedule.{k}": v for k, v in config.get("schedule", {}).items()}}
  before, after = values(previous), values(current)
  return {key: (before.get(key), after[key]) for key in after if before.get(key) != after[key]}


def resume_schedule(config: Any, previous: Dict[str, Any], derived: Dict[str, Any]
                    ) -> ml_collections.ConfigDict:
  """The config a resumed run trains with: ``config`` with the run length, warm-up or restart
  steps and ``schedule`` section of the run it resumes (``previous``, its ``config.json``), so
  the learning-rate curve goes on where it was; or, with ``config.reschedule``, as derived
  anew (``derived``: ``config`` resolved for today's data and batch). Either way each value
  that differs between the two is logged with both values."""
  differences = changes(previous, derived)
  if config.get("reschedule"):
    for key, (before, after) in differences.items():
      logging.warning("reschedule: %s was %s, now %s", key, before, after)
    return config
  for key, (before, after) in differences.items():
    logging.warning("resuming with the saved schedule: %s stays %s (today's config, data and "
                    "batch give %s; --config.reschedule=True re-derives it)", key, before, after)
  config = config.copy_and_resolve_references()
  config.unlock()
  config.num_steps = previous["num_steps"]
  for key in ("warmup_steps", "restart_every_steps"):
    if key in config.optimizer and key in previous.get("optimizer", {}):
      config.optimizer[key] = previous["optimizer"][key]
  config.schedule = ml_collections.ConfigDict(previous["schedule"])
  return config
