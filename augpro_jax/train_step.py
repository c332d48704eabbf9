"""The train step: a pure function (state, teacher_params, batch) -> (state, metrics), pmapped.

One step = teacher forward, augmentation, student forward/backward, pmean of gradients, AdamW.
With `cached_teacher_logits` (distillation's default) the teacher's logits on the original examples
come with the batch, and the step runs the teacher on augmented examples only.
It composes `augment`, `losses` and the model; it re-implements none of them.

Two shapes of step, chosen statically by the augmentation:
- gradient-free augmentations (none, mixup, augpro_mix, knn, synonym): the augmented batch is built
  first, then the teacher runs once on [original; augmented] and the student does one
  forward/backward on the same fused batch (bigger matmuls, one pass);
- FGSM-based ones (fgsm, augpro_fgsm): the student's pass on the original batch also yields the
  gradient w.r.t. its input embeddings (one backward for both), then the augmented batch gets its
  own teacher forward and student pass.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from augpro_jax import augment
from augpro_jax import losses
from augpro_jax.config import Config
from augpro_jax.model import BertClassifier, word_embedding_table

AXIS = "batch"  # the pmap axis: data parallelism over devices (and processes)
Params = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32
  params: Params
  opt_state: Any
  rng: jax.Array  # [2] uint32 base key; step keys are fold_in(rng, step), so resume is exact


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What the step needs to know statically (hashable; part of the compiled program)."""

  objective: str  # "kd" (teacher targets) | "labels" (fine-tuning / teacher training)
  aug: str  # resolved: none mixup fgsm augpro_mix augpro_fgsm knn synonym
  num_labels: int
  is_regression: bool
  shift_degree: float = 0.3
  temperature: float = 1.0
  alpha_ce: float = 0.0
  aug_weight: float = 1.0
  aug_copies: int = 1
  mix_alpha: float = 0.4
  fgsm_eps: float = 0.1
  metric: str = "l2"
  projection_table: str = "student"
  chunk_size: int = 2048
  exclude_original: bool = True
  knn_k: int = 10
  rounding: str = "stochastic"
  # kd: batch["teacher_logits"] [B, C] holds the teacher's logits on the original examples
  # (computed once before training); the step runs the teacher on augmented examples only.
  cached_teacher_logits: bool = False

  @classmethod
  def from_config(cls, cfg: Config, *, objective: str, num_labels: int, is_regression: bool,
                  aug: Optional[str] = None) -> "StepSpec":
    return cls(objective=objective, aug=aug or cfg.resolved_aug, num_labels=num_labels,
               is_regression=is_regression, shift_degree=cfg.shift_degree,
               temperature=cfg.temperature, alpha_ce=cfg.alpha_ce, aug_weight=cfg.aug_weight,
               aug_copies=cfg.aug_copies, mix_alpha=cfg.mix_alpha, fgsm_eps=cfg.fgsm_eps,
               metric=cfg.projection_metric, projection_table=cfg.projection_table,
               chunk_size=cfg.projection_chunk, exclude_original=cfg.exclude_original,
               knn_k=cfg.knn_k, rounding=cfg.shift_rounding,
               cached_teacher_logits=cfg.cache_teacher_logits and objective == "kd")


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
      optax.clip_by_global_norm(1.0),
      optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay, mask=decay_mask))
  return optimizer, schedule


def init_state(params: Params, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.PRNGKey(seed))


# ----------------------------------------------------------------------------------------------
# Model entry points.
# ----------------------------------------------------------------------------------------------


def _embed(model: BertClassifier, params: Params, ids: jax.Array) -> jax.Array:
  return model.apply({"params": params}, ids, method=BertClassifier.embed)  # [B, S, d]


def _logits(model: BertClassifier, params: Params, embeds: jax.Array, mask: jax.Array,
            types: jax.Array, dropout_key: Optional[jax.Array]) -> jax.Array:
  rngs = {} if dropout_key is None else {"dropout": dropout_key}
  return model.apply({"params": params}, embeds, mask, types, deterministic=dropout_key is None,
                     method=BertClassifier.apply_embeddings, rngs=rngs)  # [B, C] f32


# An "input builder" maps (model, params) to (embeds [N, S, d], mask [N, S], types [N, S]). The same
# builder serves teacher and student, each with its own embedding table, so representation-level
# augmentations (MixUp, FGSM) are applied identically in both spaces.
InputBuilder = Callable[[BertClassifier, Params], tuple[jax.Array, jax.Array, jax.Array]]


def _from_ids(ids, mask, types) -> InputBuilder:
  return lambda model, params: (_embed(model, params, ids), mask, types)


def _concat(*builders: InputBuilder) -> InputBuilder:
  def build(model, params):
    parts = [b(model, params) for b in builders]
    return tuple(jnp.concatenate(xs, axis=0) for xs in zip(*parts))
  return build


# ----------------------------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------------------------


def make_train_step(spec: StepSpec, student: BertClassifier, teacher: Optional[BertClassifier],
                    optimizer: optax.GradientTransformation, is_special: np.ndarray,
                    is_candidate: np.ndarray) -> Callable:
  """Build the per-device step; wrap it with `pmap_train_step`."""
  is_special = jnp.asarray(is_special)
  is_candidate = jnp.asarray(is_candidate)
  copies = spec.aug_copies if spec.aug != "none" else 0
  needs_teacher = spec.objective == "kd"

  def per_example_loss(logits, targets, teacher_logits, ce_weight):
    if spec.objective == "kd":
      loss = losses.kd_loss(logits, teacher_logits, temperature=spec.temperature,
                            is_regression=spec.is_regression)
      return loss + ce_weight * losses.target_loss(logits, targets, is_regression=spec.is_regression)
    return losses.target_loss(logits, targets, is_regression=spec.is_regression)

  def weighted_loss(params, build, delta, targets, teacher_logits, ce_weight, weight, dropout_key):
    """sum_i weight_i * loss_i over a built batch; `delta` is added to the embeddings (zeros unless
    we want the gradient w.r.t. them, for FGSM)."""
    embeds, mask, types = build(student, params)
    logits = _logits(student, params, embeds + delta, mask, types, dropout_key)
    per_ex = per_example_loss(logits, targets, teacher_logits, ce_weight)
    return jnp.sum(weight * per_ex), per_ex

  def step_fn(state: TrainState, teacher_params: Params, batch: dict[str, jax.Array]):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    batch_size = ids.shape[0]
    step_key = jax.random.fold_in(state.rng, state.step)
    example_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(step_key, 0), i))(
        batch["example_id"])  # [B]: independent of the device layout
    device_key = jax.random.fold_in(jax.random.fold_in(step_key, 1), jax.lax.axis_index(AXIS))
    dropout_key, partner_key = jax.random.split(device_key)
    gold = losses.label_targets(batch["label"], spec.num_labels, spec.is_regression)  # [B, C]
    eligible = augment.eligible_positions(ids, mask, is_special)
    orig = _from_ids(ids, mask, types)

    def copy_keys(c):
      return jax.vmap(lambda k: jax.random.fold_in(k, c + 2))(example_keys)

    def projection_table(params):
      if spec.projection_table == "teacher":
        return word_embedding_table(teacher_params)
      return jax.lax.stop_gradient(word_embedding_table(params))

    def teacher_logits(build):
      if not needs_teacher:
        return None
      if build is orig and spec.cached_teacher_logits:
        return batch["teacher_logits"].astype(jnp.float32)  # [B, C]
      with jax.named_scope("teacher_forward"):
        embeds, m, t = build(teacher, teacher_params)
        return jax.lax.stop_gradient(_logits(teacher, teacher_params, embeds, m, t, None))

    orig_w = jnp.full((batch_size,), 1.0 / batch_size)
    aug_w = jnp.full((batch_size * max(copies, 1),), spec.aug_weight / (batch_size * max(copies, 1)))
    orig_ce = jnp.full((batch_size,), spec.alpha_ce)
    aug_ce = jnp.zeros((batch_size * max(copies, 1),))  # gold labels are for the original text only

    def grad_of(build, targets, t_logits, ce_w, w, key, params, with_delta=False):
      delta = jnp.zeros(ids.shape + (student.config.hidden_size,)) if with_delta else 0.0
      fn = jax.value_and_grad(weighted_loss, argnums=(0, 2) if with_delta else 0, has_aux=True)
      return fn(params, build, delta, targets, t_logits, ce_w, w, key)

    shifts = []  # per-example measured shift of each augmented copy, with validity
    token_kwargs = dict(shift_degree=spec.shift_degree, metric=spec.metric,
                        candidate_mask=is_candidate, chunk_size=spec.chunk_size,
                        rounding=spec.rounding)

    def token_copies(make_ids):
      """`copies` token-level augmentations of the batch, copy-major, as one input builder."""
      new_ids = []
      for c in range(copies):
        new = make_ids(c, copy_keys(c))  # [B, S]
        shifts.append(augment.measured_shift(ids, new, eligible))
        new_ids.append(new)
      new_ids = jax.lax.stop_gradient(jnp.concatenate(new_ids))
      return _from_ids(new_ids, jnp.tile(mask, (copies, 1)), jnp.tile(types, (copies, 1)))

    # ---- Build the augmented batch -------------------------------------------------------------
    fgsm_family = spec.aug in ("fgsm", "augpro_fgsm")
    if fgsm_family:
      t_orig = teacher_logits(orig)
      with jax.named_scope("student_orig_and_input_grad"):
        (loss_o, per_o), (grads_o, grad_embeds) = grad_of(
            orig, gold, t_orig, orig_ce, orig_w, dropout_key, state.params, with_delta=True)
      delta = augment.fgsm_delta(grad_embeds, spec.fgsm_eps)  # [B, S, d_student]
      with jax.named_scope("augment"):
        if spec.aug == "fgsm":
          aug_build = _concat(*[
              (lambda model, params: (_embed(model, params, ids) + delta, mask, types))
              for _ in range(copies)])
        else:
          table = projection_table(state.params)
          aug_build = token_copies(lambda c, keys: augment.augpro_perturb(
              keys, ids, eligible, delta, table, exclude_original=spec.exclude_original,
              **token_kwargs))
      aug_targets = jnp.tile(gold, (copies, 1))
      t_aug = teacher_logits(aug_build)
      with jax.named_scope("student_aug"):
        (loss_a, per_a), grads_a = grad_of(aug_build, aug_targets, t_aug, aug_ce, aug_w,
                                           jax.random.fold_in(dropout_key, 1), state.params)
      loss = loss_o + loss_a
      grads = jax.tree.map(jnp.add, grads_o, grads_a)
      per_orig, per_aug = per_o, per_a
    else:
      with jax.named_scope("augment"):
        aug_build, aug_targets = None, None
        if spec.aug == "mixup":
          builds, targets = [], []
          for c in range(copies):
            keys = copy_keys(c)
            partner = augment.partner_permutation(jax.random.fold_in(partner_key, c), batch_size)
            lam = augment.mix_coefficients(keys, spec.mix_alpha, keep_major=False)  # [B]
            mixed_mask = jnp.maximum(mask, mask[partner])

            def mix_build(model, params, partner=partner, lam=lam, mixed_mask=mixed_mask):
              e = _embed(model, params, ids)
              return lam[:, None, None] * e + (1 - lam[:, None, None]) * e[partner], mixed_mask, types
            builds.append(mix_build)
            targets.append(lam[:, None] * gold + (1 - lam[:, None]) * gold[partner])
          aug_build, aug_targets = _concat(*builds), jnp.concatenate(targets)
        elif spec.aug in ("augpro_mix", "knn"):
          table = projection_table(state.params)

          def token_aug(c, keys):
            if spec.aug == "knn":
              return augment.knn_replace(keys, ids, eligible, table, k=spec.knn_k, **token_kwargs)
            partner = augment.partner_permutation(jax.random.fold_in(partner_key, c), batch_size)
            lam = augment.mix_coefficients(keys, spec.mix_alpha, keep_major=True)
            return augment.augpro_mix(keys, ids, eligible, partner, lam, table,
                                      exclude_original=spec.exclude_original, **token_kwargs)
          aug_build = token_copies(token_aug)
          aug_targets = jnp.tile(gold, (copies, 1))
        elif spec.aug == "synonym":
          # Replaced on the host (input pipeline): [B, copies, S] -> copy-major [copies * B, S].
          def flat(x):
            return jnp.swapaxes(x, 0, 1).reshape(-1, x.shape[-1])
          aug_build = _from_ids(flat(batch["aug_input_ids"]), flat(batch["aug_attention_mask"]),
                                flat(batch["aug_token_type_ids"]))
          aug_targets = jnp.tile(gold, (copies, 1))
          host_shift = batch["aug_shift"]  # [B, copies], NaN where nothing was eligible
          for c in range(copies):
            shifts.append((jnp.nan_to_num(host_shift[:, c]), ~jnp.isnan(host_shift[:, c])))
      if aug_build is None:
        build, targets, ce_w, w = orig, gold, orig_ce, orig_w
      else:
        build = _concat(orig, aug_build)
        targets = jnp.concatenate([gold, aug_targets])
        ce_w = jnp.concatenate([orig_ce, aug_ce])
        w = jnp.concatenate([orig_w, aug_w])
      if spec.cached_teacher_logits and aug_build is not None:
        t_all = jnp.concatenate([teacher_logits(orig), teacher_logits(aug_build)])
      else:
        t_all = teacher_logits(build)  # one fused teacher call on [original; augmented]
      with jax.named_scope("student_forward_backward"):
        (loss, per_all), grads = grad_of(build, targets, t_all, ce_w, w, dropout_key, state.params)
      per_orig, per_aug = per_all[:batch_size], per_all[batch_size:]

    # ---- Update ---------------------------------------------------------------------------------
    with jax.named_scope("update"):
      grads = jax.lax.pmean(grads, AXIS)
      grad_norm = optax.tree.norm(grads)
      finite = jnp.isfinite(grad_norm) & jnp.isfinite(jax.lax.pmean(loss, AXIS))
      # A non-finite step leaves parameters and optimizer untouched; the host loop decides whether
      # to stop (default) or skip it (--skip_nonfinite_steps). `cond` rather than a `where` over
      # every parameter and moment: the skip costs nothing on the (usual) finite path.
      def apply_update(params, opt_state):
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt_state
      new_params, new_opt_state = jax.lax.cond(
          finite, apply_update, lambda params, opt_state: (params, opt_state),
          state.params, state.opt_state)
      new_state = state.replace(step=state.step + 1, params=new_params, opt_state=new_opt_state)

    metrics = {
        "loss": loss,  # weighted sum = the objective on this device's slice
        "loss_orig": jnp.mean(per_orig),
        "grad_norm": grad_norm,
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    if per_aug.shape[0]:
      metrics["loss_aug"] = jnp.mean(per_aug)
    metrics = jax.lax.pmean(metrics, AXIS)
    if shifts:
      total = sum(jnp.sum(jnp.where(ok, s, 0.0)) for s, ok in shifts)
      count = sum(jnp.sum(ok) for _, ok in shifts)
      total, count = jax.lax.psum((total, count.astype(jnp.float32)), AXIS)
      metrics["measured_shift"] = total / jnp.maximum(count, 1.0)
    return new_state, metrics

  return step_fn


def pmap_train_step(step_fn: Callable) -> Callable:
  """pmap over local devices; the state is donated (updated in place), the teacher is not."""
  return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def _pmap_sharding(devices: tuple[jax.Device, ...]) -> jax.sharding.Sharding:
  """The sharding pmap gives its outputs. Inputs placed with any other one (flax.jax_utils uses a
  differently named mesh) make pmap compile the step a second time after the first call."""
  return jax.pmap(lambda x: x, axis_name=AXIS, devices=list(devices))(
      np.zeros(len(devices), np.float32)).sharding


def shard(tree: Any, devices: Optional[list[jax.Device]] = None) -> Any:
  """Place a pytree of host arrays laid out [devices, ...] one slice per device.

  Multi-process runs pass the same host-local arrays: pmap itself rewraps them (without a copy) as
  the global [all devices, ...] array, and unwraps its outputs back to this process's part.
  """
  sharding = _pmap_sharding(tuple(devices or jax.local_devices()))
  return jax.device_put(tree, sharding)


def replicate(tree: Any, devices: Optional[list[jax.Device]] = None) -> Any:
  """One copy of `tree` per device, laid out [devices, ...] as pmap expects."""
  n = len(devices or jax.local_devices())
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), tree)
  return shard(stacked, devices)


def unreplicate(tree: Any) -> Any:
  """Device 0's copy of a pmapped pytree ([devices, ...] -> [...]).

  flax.jax_utils.unreplicate returns the leading axis unsqueezed on a one-device mesh; this works
  for any device count, and multi-process too (only addressable shards are read).
  """
  return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)


def make_predict_step(model: BertClassifier) -> Callable:
  """pmapped eval: logits [devices, per_device, C] for a batch from `eval_batches`."""

  def predict(params, batch):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"], deterministic=True)

  return jax.pmap(predict, axis_name=AXIS)
