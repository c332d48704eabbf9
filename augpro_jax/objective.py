"""The step's objective: the student's loss on a batch of examples and its gradients, and the
teacher's targets.

A `Part` is the examples one student pass trains on (originals, augmented copies, or both fused),
with their targets and weights; `StudentLoss` gives its loss, the gradient w.r.t. the parameters
and, for the FGSM family, w.r.t. the input embeddings. The train step (`train_step.py`) composes
these with the augmentation registry and the update.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from augpro_jax import augmentations
from augpro_jax import losses
from augpro_jax.model import BertClassifier

if TYPE_CHECKING:
  from augpro_jax.train_step import StepSpec  # pylint: disable=g-bad-import-order

Params = Any


def model_logits(model: BertClassifier, params: Params, embeds: jax.Array, mask: jax.Array,
                 types: jax.Array, dropout_key: Optional[jax.Array]) -> jax.Array:
  """[B, C] f32 from input embeddings; deterministic (no dropout) without a dropout key."""
  rngs = {} if dropout_key is None else {"dropout": dropout_key}
  return model.apply({"params": params}, embeds, mask, types, deterministic=dropout_key is None,
                     method=BertClassifier.apply_embeddings, rngs=rngs)


class Part(NamedTuple):
  """Examples that one student pass trains on, with their per-example targets and weights."""

  build: augmentations.InputBuilder
  targets: jax.Array  # [N, C] gold targets (mixed, for MixUp copies)
  ce_weight: jax.Array  # [N] weight of the gold-label term in KD (alpha_ce; 0 for copies)
  weight: jax.Array  # [N] weight of each example's loss in the step's objective


def originals(spec: StepSpec, build: augmentations.InputBuilder, gold: jax.Array) -> Part:
  """The original examples: their losses average to 1; gold-label cross-entropy (alpha_ce) is
  for the original text only."""
  n = gold.shape[0]
  return Part(build, gold, jnp.full((n,), spec.loss.alpha_ce), jnp.full((n,), 1.0 / n))


def copies(spec: StepSpec, made: list[augmentations.Copy]) -> Part:
  """The augmented copies, fused: their losses average to aug_weight, with no gold-label term."""
  count = sum(m.targets.shape[0] for m in made)
  return Part(augmentations.concat(*[m.build for m in made]),
              jnp.concatenate([m.targets for m in made]), jnp.zeros((count,)),
              jnp.full((count,), spec.loss.aug_weight / max(count, 1)))


def fuse(parts: list[Part]) -> Part:
  """One part for the examples of several, in order (one bigger batch, one model pass)."""
  build = augmentations.concat(*[p.build for p in parts]) if len(parts) > 1 else parts[0].build
  return Part(build, *(jnp.concatenate([p[i] for p in parts]) for i in (1, 2, 3)))


@dataclasses.dataclass(frozen=True)
class StudentLoss:
  """The student's loss on a `Part` and its gradients (w.r.t. params, and the input embeddings)."""

  spec: StepSpec
  student: BertClassifier

  def per_example(self, logits: jax.Array, part: Part, t_logits: Optional[jax.Array]
                  ) -> jax.Array:  # [N]
    spec = self.spec
    gold_loss = losses.target_loss(logits, part.targets, is_regression=spec.is_regression)
    if spec.objective != "kd":
      return gold_loss
    kd = losses.kd_loss(logits, t_logits, temperature=spec.loss.temperature,
                        is_regression=spec.is_regression)
    return kd + part.ce_weight * gold_loss

  def logits(self, params: Params, delta: Any, part: Part, key: jax.Array) -> jax.Array:
    """[N, C]; `delta` [N, S, d] is added to the input embeddings (a scalar 0.0 when unused)."""
    embeds, mask, types = part.build(self.student, params)
    return model_logits(self.student, params, embeds + delta, mask, types, key)

  def value(self, logits: jax.Array, part: Part, t_logits: Optional[jax.Array]
            ) -> tuple[jax.Array, jax.Array]:
    """(sum_i weight_i * loss_i, loss [N])."""
    per_ex = self.per_example(logits, part, t_logits)
    return jnp.sum(part.weight * per_ex), per_ex

  def grads(self, params: Params, part: Part, t_logits: Optional[jax.Array], key: jax.Array
            ) -> tuple[tuple[jax.Array, jax.Array], Params]:
    """((loss, per-example loss), d loss / d params)."""
    fn = lambda p: self.value(self.logits(p, 0.0, part, key), part, t_logits)
    return jax.value_and_grad(fn, has_aux=True)(params)

  def grads_and_input_grad(self, params: Params, part: Part, t_logits: Optional[jax.Array],
                           key: jax.Array, delta: jax.Array) -> tuple[tuple, tuple]:
    """((loss, per-example loss), (d loss / d params, d attack loss / d input embeddings)).

    FGSM climbs the step's own loss (one backward pass for both gradients) unless distillation
    asks for the gold-label loss (ce) or KD + gold (both); fine-tuning's own loss is the gold one.
    """
    spec = self.spec
    if spec.objective != "kd" or spec.augment.fgsm_loss == "kd":
      fn = lambda p, d: self.value(self.logits(p, d, part, key), part, t_logits)
      return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(params, delta)
    attack = lambda logits: jnp.sum(part.weight * losses.attack_loss(
        logits, part.targets, t_logits, which=spec.augment.fgsm_loss,
        temperature=spec.loss.temperature, is_regression=spec.is_regression))
    return value_grad_and_input_grad(lambda p, d: self.logits(p, d, part, key),
                                     lambda logits: self.value(logits, part, t_logits), attack,
                                     params, delta)


def teacher_logits(spec: StepSpec, teacher: Optional[BertClassifier], teacher_params: Params,
                   batch: dict[str, jax.Array], builds: list[augmentations.InputBuilder],
                   cached_first: bool) -> Optional[jax.Array]:
  """The teacher's logits [N, C] on the examples of `builds`, in order (None unless KD).

  With `cached_first`, the first build's examples are the originals, whose logits come with the
  batch (`batch["teacher_logits"]`); the teacher runs once on the rest, fused.
  """
  if spec.objective != "kd":
    return None
  live = builds[1:] if cached_first else builds
  out = [batch["teacher_logits"].astype(jnp.float32)] if cached_first else []
  if live:
    with jax.named_scope("teacher_forward"):
      embeds, m, t = augmentations.concat(*live)(teacher, teacher_params)
      out.append(jax.lax.stop_gradient(model_logits(teacher, teacher_params, embeds, m, t, None)))
  return out[0] if len(out) == 1 else jnp.concatenate(out)


def value_grad_and_input_grad(forward: Callable, loss: Callable, input_loss: Callable,
                              params: Params, delta: jax.Array) -> tuple[tuple, tuple]:
  """((loss, aux), (d loss / d params, d input_loss / d delta)) of `forward(params, delta)`.

  loss(out) -> (scalar, aux) is the one trained; input_loss(out) -> scalar the one whose input
  gradient is wanted. One forward pass, then two backward passes through it; the second one's
  parameter gradient is unused, so XLA does not compute it.
  """
  out, pullback = jax.vjp(forward, params, delta)
  (value, aux), d_out = jax.value_and_grad(loss, has_aux=True)(out)
  grads, _ = pullback(d_out)
  _, input_grad = pullback(jax.grad(input_loss)(out))
  return (value, aux), (grads, input_grad)
