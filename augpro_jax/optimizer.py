"""The optimizer: AdamW with a linear warm-up and decay, after a clip at global norm 1.

The clip takes the gradients' global norm from the step, which computes it anyway (for the
non-finite guard and the metrics); see `clip_by_global_norm`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_optimizer(learning_rate: float, total_steps: int, warmup_fraction: float,
                   weight_decay: float) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW, linear warm-up then linear decay to 0, clipped at global norm 1, no decay on biases/LN."""
  warmup = int(total_steps * warmup_fraction)
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, max(warmup, 1)),
       optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup, 1))], [warmup])

  def decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", "") in ("bias", "scale") for k in path), params)

  optimizer = optax.chain(
      clip_by_global_norm(1.0),
      optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=decay_mask))
  return optimizer, schedule


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """`optax.clip_by_global_norm`, with the same state and arithmetic, that takes the norm from the
  caller (`update(..., grad_norm=n)`) when it has one. The step computes the norm anyway (for the
  non-finite guard and the metrics); inside the guard's `cond` XLA cannot reuse it, so optax's
  clip would compute it a second time. The same `select` as optax's: results stay bit for bit.
  """
  def update_fn(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    norm = optax.tree.norm(updates) if grad_norm is None else jnp.asarray(grad_norm)
    clip = lambda t: jax.lax.select(norm < max_norm, t, (t / norm.astype(t.dtype)) * max_norm)
    return jax.tree.map(clip, updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)
