"""Per-example losses. All return [N] float32; the train step weights and sums them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float,
            is_regression: bool) -> jax.Array:
  """KL(teacher || student) at temperature T, scaled by T^2 (Hinton et al.); MSE for regression.

  student_logits, teacher_logits [N, C] -> [N]. The teacher gets no gradient.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  student_logits = student_logits.astype(jnp.float32)
  if is_regression:
    return jnp.mean(jnp.square(student_logits - teacher_logits), axis=-1)
  t_log_probs = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  s_log_probs = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(t_log_probs) * (t_log_probs - s_log_probs), axis=-1)
  return (temperature ** 2) * kl


def target_loss(logits: jax.Array, targets: jax.Array, *, is_regression: bool) -> jax.Array:
  """Cross-entropy against target distributions [N, C] (one-hot or mixed); MSE against [N, 1]."""
  logits = logits.astype(jnp.float32)
  if is_regression:
    return jnp.mean(jnp.square(logits - targets), axis=-1)
  return optax.softmax_cross_entropy(logits, targets)


def label_targets(labels: jax.Array, num_labels: int, is_regression: bool) -> jax.Array:
  """Gold labels [N] -> targets: one-hot [N, C] or scores [N, 1]."""
  if is_regression:
    return labels.astype(jnp.float32)[:, None]
  return jax.nn.one_hot(labels, num_labels, dtype=jnp.float32)


def attack_loss(logits: jax.Array, targets: jax.Array, teacher_logits: jax.Array, *, which: str,
                temperature: float, is_regression: bool) -> jax.Array:
  """The loss FGSM climbs in distillation when it is not the step's own [N] (`--fgsm_loss`):
  "ce" the gold-label loss (cross-entropy, or MSE for regression), "both" KD + that loss."""
  gold = target_loss(logits, targets, is_regression=is_regression)
  if which == "ce":
    return gold
  if which == "both":
    return gold + kd_loss(logits, teacher_logits, temperature=temperature,
                          is_regression=is_regression)
  raise ValueError(f"no separate FGSM loss for {which!r}")
