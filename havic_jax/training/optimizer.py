"""AdamW with gradient clipping and the learning-rate schedules of spec §11."""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from havic_jax.models.havic_models import PRETRAINED_MODULES

Schedule = Callable[[jax.Array], jax.Array]

def cosine_warm_restarts(peak: float, period: int, floor: float) -> Schedule:
  """Cosine from ``peak`` to ``floor`` over ``period`` steps, restarting every period."""
  def schedule(step):
    phase = jnp.mod(step, period) / period
    return floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * phase))
  return schedule


def pretrain_schedule(opt: Any, num_steps: int, peak: float) -> Schedule:
  """``opt.schedule`` over ``num_steps`` steps to ``peak``, warming up for
  ``opt.warmup_steps``."""
  if opt.schedule == "onecycle":
    return optax.cosine_onecycle_schedule(
        transition_steps=num_steps, peak_value=peak,
        pct_start=opt.warmup_steps / num_steps, div_factor=opt.onecycle_div_factor,
        final_div_factor=opt.onecycle_final_div_factor)
  if opt.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=opt.warmup_steps, decay_steps=num_steps)
  raise ValueError(f"optimizer.schedule must be 'onecycle' or 'warmup_cosine', "
                   f"got {opt.schedule!r}")


def _adamw(opt: Any, learning_rate: Schedule) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)


def parameter_group(params: Dict[str, Any]) -> Dict[str, Any]:
  """Labels each top-level parameter collection "pretrained" or "new" (fine-tuning)."""
  return {name: jax.tree.map(lambda _: "pretrained" if name in PRETRAINED_MODULES else "new",
                             subtree)
          for name, subtree in params.items()}


def make_optimizer(config: Any) -> Tuple[optax.GradientTransformation, Dict[str, Schedule]]:
  """The stage's optimizer and its named learning-rate schedules (for logging), for a config
  whose run length is resolved (``run_length.resolve``: step counts, the learning rates used).

  Pretraining: clip 1.0 -> AdamW(β 0.95/0.999, wd 0.05) with the one-cycle or warm-up+cosine
  schedule. Fine-tuning: the same, with 1e-5 for pretrained modules and 1e-4 for new ones
  (at the reference batch), each on cosine warm restarts.
  """
  opt, rates = config.optimizer, config.schedule.learning_rates
  clip = optax.clip_by_global_norm(opt.grad_clip_norm)
  if config.stage == "pretrain":
    schedule = pretrain_schedule(opt, config.num_steps, rates.peak_learning_rate)
    return optax.chain(clip, _adamw(opt, schedule)), {"learning_rate": schedule}
  schedules = {
      group: cosine_warm_restarts(rates[f"{group}_learning_rate"], opt.restart_every_steps,
                                  opt.learning_rate_floor)
      for group in ("pretrained", "new")}
  tx = optax.multi_transform({g: _adamw(opt, s) for g, s in schedules.items()},
                             parameter_group)
  return (optax.chain(clip, tx),
          {f"learning_rate_{group}": s for group, s in schedules.items()})
