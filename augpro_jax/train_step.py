"""The train step: a pure function (state, teacher_params, batch) -> (state, metrics), written for
one slice of the mesh's `data` axis and run over the whole mesh by `sharding.mesh_step`.

One step = teacher forward, augmentation, student forward/backward, pmean of gradients, AdamW.
With `cached_teacher_logits` (distillation's default) the teacher's logits on the original examples
come with the batch, and the step runs the teacher on augmented examples only.
It composes the augmentation registry (`augmentations`), `losses` and the model; it re-implements
none of them.

Two shapes of step, chosen statically by the registry entry:
- gradient-free augmentations: the augmented copies are built first, then the teacher runs once on
  [original; augmented] and the student does one forward/backward on the same fused batch (bigger
  matmuls, one pass);
- entries that need the input gradient (the FGSM family): the student's pass on the original batch
  also yields the gradient w.r.t. its input embeddings (one backward for both), then the augmented
  copies get their own teacher forward and student pass. When FGSM follows another loss than the
  step's own (`--fgsm_loss=ce|both` in distillation), the forward pass is shared and a second
  backward pass, with no parameter gradient, gives the input gradient of that loss.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import losses
from augpro_jax import objective as objective_lib
from augpro_jax import sharding
from augpro_jax import token_profile
from augpro_jax.config import AugmentConfig
from augpro_jax.config import Config
from augpro_jax.config import LossConfig
from augpro_jax.model import BertClassifier, BertConfig, word_embedding_table

# Random bits (dropout masks above all) from the original threefry scheme rather than the
# "partitionable" one that JAX uses by default: on CPU the partitionable one is about 5x slower per
# bit, and the student's attention-dropout masks ([batch, heads, seq, seq] per layer) were a large
# part of its step. Either scheme gives the same bits on any layout of one key's array; they differ
# in cost when `jit` splits that array over devices. Here each data slice draws its own bits (the
# step is manual over `data`); only --mesh_fsdp splits a draw, and `Dropout` switches to the
# partitionable scheme there. Random streams, and hence results, differ between the schemes
# (docs/benchmarks.md, docs/multihost.md).
jax.config.update("jax_threefry_partitionable", False)

AXIS = sharding.DATA  # data parallelism (devices and processes): the step's collectives' axis
Params = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32
  params: Params
  opt_state: Any
  rng: jax.Array  # [2] uint32 base key; step keys are fold_in(rng, step), so resume is exact
  # Run counters, checkpointed with the parameters (a resumed run continues them exactly).
  shift_sum: jax.Array  # [] f32: sum over steps of the step's mean measured shift
  shift_steps: jax.Array  # [] int32: steps that measured a shift
  profile_counts: jax.Array  # [len(token_profile.COUNTS)] f32: the projections' profile, summed
  nonfinite_steps: jax.Array  # [] int32: steps skipped because the loss or gradient was not finite
  # Tokens of the original examples over all steps (f32: no overflow; exact below 2^24):
  real_tokens: jax.Array  # [] f32: real (attention mask 1)
  padded_tokens: jax.Array  # [] f32: processed, i.e. examples x the batch's sequence length


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """What the step needs to know statically (hashable; part of the compiled program)."""

  objective: str  # "kd" (teacher targets) | "labels" (fine-tuning / teacher training)
  aug: str  # a registered augmentation name (resolved alias)
  num_labels: int
  is_regression: bool
  augment: AugmentConfig = AugmentConfig()
  loss: LossConfig = LossConfig()
  # kd: batch["teacher_logits"] [B, C] holds the teacher's logits on the original examples
  # (computed once before training); the step runs the teacher on augmented examples only.
  cached_teacher_logits: bool = False

  @classmethod
  def from_config(cls, cfg: Config, *, objective: str, num_labels: int, is_regression: bool,
                  aug: Optional[str] = None) -> "StepSpec":
    return cls(objective=objective, aug=augmentations.resolve(aug or cfg.aug),
               num_labels=num_labels, is_regression=is_regression, augment=cfg.augment,
               loss=cfg.loss, cached_teacher_logits=cfg.cache_teacher_logits and objective == "kd")


def run_profile(state: TrainState) -> dict[str, Any]:
  """The run's projection profile from a host `TrainState`: shares of all changed tokens so far
  (`token_profile.shares`), resumed steps included."""
  return token_profile.shares(np.asarray(state.profile_counts))


def init_state(params: Params, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.PRNGKey(seed), shift_sum=jnp.zeros((), jnp.float32),
                    shift_steps=jnp.zeros((), jnp.int32),
                    profile_counts=jnp.zeros((len(token_profile.COUNTS),), jnp.float32),
                    nonfinite_steps=jnp.zeros((), jnp.int32),
                    real_tokens=jnp.zeros((), jnp.float32), padded_tokens=jnp.zeros((), jnp.float32))


# ----------------------------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------------------------


def step_keys(state: TrainState, example_id: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(per-example keys [B], dropout key, partner key) of this step.

  Per-example keys depend on (seed, step, example_id) only, so an example is augmented the same way
  on any mesh; dropout and MixUp partners are per slice of the mesh's `data` axis.
  """
  step_key = jax.random.fold_in(state.rng, state.step)
  example_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(step_key, 0), i))(
      example_id)
  device_key = jax.random.fold_in(jax.random.fold_in(step_key, 1), jax.lax.axis_index(AXIS))
  dropout_key, partner_key = jax.random.split(device_key)
  return example_keys, dropout_key, partner_key


def make_copies(aug: augmentations.Augmentation, inputs: augmentations.StepInputs,
                example_keys: jax.Array, partner_key: jax.Array,
                copies: int) -> list[augmentations.Copy]:
  """The step's augmented copies: copy c draws from fold_in(example key, c + 2) per example."""
  return [aug.make_copy(inputs, c, jax.vmap(lambda k, c=c: jax.random.fold_in(k, c + 2))(
      example_keys), jax.random.fold_in(partner_key, c)) for c in range(copies)]


def make_train_step(spec: StepSpec, student: BertClassifier, teacher: Optional[BertClassifier],
                    optimizer: optax.GradientTransformation, is_special: np.ndarray,
                    is_candidate: np.ndarray,
                    token_flags: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Callable:
  """Build the step of one data slice (state, teacher_params, batch) -> (state, metrics); see
  `sharding.mesh_step`. The augmentation comes from the registry; this function only composes.

  is_special, is_candidate [V] bool: never augmented / what a projection may return.
  token_flags: (is_continuation [V], is_non_ascii [V]) for the projection profile's shares of
  word-piece continuations and non-ASCII tokens (`input_pipeline.token_flags`); without them the
  profile counts neither.
  """
  aug = augmentations.get(spec.aug)
  # The update passes the step's gradient norm (`optimizer.clip_by_global_norm` takes it); a plain
  # optax optimizer is wrapped to accept and ignore it. The state layout is unchanged.
  optimizer = optax.with_extra_args_support(optimizer)
  is_special, is_candidate = jnp.asarray(is_special), jnp.asarray(is_candidate)
  if token_flags is None:
    flags = (jnp.zeros_like(is_special), jnp.zeros_like(is_special))
  else:
    flags = tuple(jnp.asarray(f) for f in token_flags)
  copies = spec.augment.aug_copies if aug.level != "none" else 0
  objective = objective_lib.StudentLoss(spec, student)

  def step_fn(state: TrainState, teacher_params: Params, batch: dict[str, jax.Array]):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    n = ids.shape[0]
    example_keys, dropout_key, partner_key = step_keys(state, batch["example_id"])
    inputs = augmentations.StepInputs(
        ids=ids, mask=mask, types=types, eligible=augment.eligible_positions(ids, mask, is_special),
        gold=losses.label_targets(batch["label"], spec.num_labels, spec.is_regression),
        batch=batch, table=_projection_table(spec, state.params, teacher_params)
        if aug.level == "token" else None,
        candidate_mask=is_candidate, knobs=spec.augment)
    orig = augmentations.from_ids(ids, mask, types)
    t_logits = lambda builds, with_orig: objective_lib.teacher_logits(
        spec, teacher, teacher_params, batch, builds, with_orig and spec.cached_teacher_logits)
    original = objective_lib.originals(spec, orig, inputs.gold)
    grads = loss = None
    per_example = []
    if aug.needs_input_grad:  # the original pass also yields d(loss)/d(input embeddings)
      with jax.named_scope("student_orig_and_input_grad"):
        (loss, per_orig), (grads, grad_embeds) = objective.grads_and_input_grad(
            state.params, original, t_logits([orig], True), dropout_key,
            jnp.zeros(ids.shape + (student.config.embedding_width,)))
      inputs = dataclasses.replace(
          inputs, delta=augment.fgsm_delta(grad_embeds, spec.augment.fgsm_eps))
      per_example.append(per_orig)
    with jax.named_scope("augment"):
      made = make_copies(aug, inputs, example_keys, partner_key, copies)
    # Gradient-free augmentations train on [original; copies] in one fused pass (bigger matmuls);
    # the FGSM family has already done the originals' pass.
    parts = ([] if aug.needs_input_grad else [original]) + (
        [objective_lib.copies(spec, made)] if made else [])
    key = jax.random.fold_in(dropout_key, 1) if aug.needs_input_grad else dropout_key
    with jax.named_scope("student_forward_backward"):
      (loss_b, per_b), grads_b = objective.grads(
          state.params, objective_lib.fuse(parts),
          t_logits([p.build for p in parts], not aug.needs_input_grad), key)
    loss = loss_b if loss is None else loss + loss_b
    grads = grads_b if grads is None else jax.tree.map(jnp.add, grads, grads_b)
    per_all = jnp.concatenate(per_example + [per_b])
    shifts = [m.shift for m in made if m.shift is not None]
    tokens = (jnp.sum(mask > 0).astype(jnp.float32), jnp.asarray(mask.size, jnp.float32))
    return _update(state, optimizer, grads, loss, per_all[:n], per_all[n:], shifts, tokens,
                   _profile(ids, inputs.eligible, made, flags), token_flags is not None)

  return step_fn


def _profile(ids: jax.Array, eligible: jax.Array, made: list[augmentations.Copy],
             flags: tuple[jax.Array, jax.Array]) -> Optional[tuple[jax.Array, bool]]:
  """This device's projection-profile counts, summed over copies (over devices in `_update`),
  and whether a partner was mixed in; None when no copy carries its ids."""
  profiled = [m for m in made if m.ids is not None]
  if not profiled:
    return None
  return (sum(token_profile.profile_counts(ids, m.ids, eligible, m.met, *flags)
              for m in profiled),
          any(m.met is not None for m in profiled))


def _projection_table(spec: StepSpec, params: Params, teacher_params: Params) -> jax.Array:
  if spec.augment.projection_table == "teacher":
    return word_embedding_table(teacher_params)
  return jax.lax.stop_gradient(word_embedding_table(params))


def _update(state: TrainState, optimizer: optax.GradientTransformation, grads: Params,
            loss: jax.Array, per_orig: jax.Array, per_aug: jax.Array,
            shifts: list[tuple[jax.Array, jax.Array]], tokens: tuple[jax.Array, jax.Array],
            profile: Optional[tuple[jax.Array, bool]] = None,
            with_token_flags: bool = False) -> tuple[TrainState, dict[str, jax.Array]]:
  """All-reduce the gradients, apply AdamW unless they are non-finite, update the run counters.

  tokens: (real, processed) tokens of this device's original examples.
  profile: (this device's projection-profile counts [len(COUNTS)], whether a partner was mixed).
  """
  with jax.named_scope("update"):
    if jax.lax.axis_size(AXIS) > 1:  # on one device the all-reduce would only copy every gradient
      grads = jax.lax.pmean(grads, AXIS)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(jax.lax.pmean(loss, AXIS))

    # A non-finite step leaves parameters and optimizer untouched; the host loop decides whether
    # to stop (default) or skip it (--skip_nonfinite_steps). `cond` rather than a `where` over
    # every parameter and moment: the skip costs nothing on the (usual) finite path.
    def apply_update(params, opt_state):
      updates, new_opt_state = optimizer.update(grads, opt_state, params, grad_norm=grad_norm)
      return optax.apply_updates(params, updates), new_opt_state
    new_params, new_opt_state = jax.lax.cond(
        finite, apply_update, lambda params, opt_state: (params, opt_state),
        state.params, state.opt_state)

  metrics = {
      "loss": loss,  # weighted sum = the objective on this device's slice
      "loss_orig": jnp.mean(per_orig),
      "grad_norm": grad_norm,
      "nonfinite": 1.0 - finite.astype(jnp.float32),
  }
  if per_aug.shape[0]:
    metrics["loss_aug"] = jnp.mean(per_aug)
  metrics = jax.lax.pmean(metrics, AXIS)
  shift_sum, shift_steps = state.shift_sum, state.shift_steps
  if shifts:
    total = sum(jnp.sum(jnp.where(ok, s, 0.0)) for s, ok in shifts)
    count = sum(jnp.sum(ok) for _, ok in shifts)
    total, count = jax.lax.psum((total, count.astype(jnp.float32)), AXIS)
    metrics["measured_shift"] = total / jnp.maximum(count, 1.0)
    shift_sum, shift_steps = shift_sum + metrics["measured_shift"], shift_steps + 1
  real, processed = jax.lax.psum(tokens, AXIS)
  metrics["token_utilisation"] = real / processed  # how much of the step's work is not padding
  profile_counts = state.profile_counts
  if profile is not None:
    counts = jax.lax.psum(profile[0], AXIS)
    metrics.update(token_profile.step_metrics(counts, profile[1], with_token_flags))
    profile_counts = profile_counts + counts
  new_state = state.replace(step=state.step + 1, params=new_params, opt_state=new_opt_state,
                            shift_sum=shift_sum, shift_steps=shift_steps,
                            profile_counts=profile_counts,
                            real_tokens=state.real_tokens + real,
                            padded_tokens=state.padded_tokens + processed,
                            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
  metrics["nonfinite_steps"] = new_state.nonfinite_steps  # over the whole run, resumes included
  return new_state, metrics


class CompiledSteps:
  """The jitted step (`sharding.mesh_step`) compiled once per sequence length (one per bucket).

  `compile` builds the executable of a batch's length ahead of the loop; a call with a length not
  seen yet compiles it then (a host augmentation can lengthen a batch past its bucket).
  """

  def __init__(self, step: Callable):
    self.step = step
    self.executables: dict[int, Any] = {}  # sequence length -> compiled step
    self.compile_seconds: dict[int, float] = {}

  def compile(self, state: TrainState, teacher_params: Params, batch: dict[str, jax.Array]) -> Any:
    length = batch["input_ids"].shape[-1]
    if length not in self.executables:
      start = time.perf_counter()
      self.executables[length] = self.step.lower(state, teacher_params, batch).compile()
      self.compile_seconds[length] = time.perf_counter() - start
    return self.executables[length]

  def __call__(self, state: TrainState, teacher_params: Params, batch: dict[str, jax.Array]):
    return self.compile(state, teacher_params, batch)(state, teacher_params, batch)


def make_predict_step(model: BertClassifier, mesh: jax.sharding.Mesh) -> Callable:
  """The eval step on `mesh`: (params, batch [examples, ...]) -> logits [examples, C], whole on
  every process (replicated), for a batch that `sharding.put_batch` placed.

  One per model shape and mesh in a process: eval ignores dropout, so models that differ only in
  it share one step and every program it compiled (a distill run's teacher is evaluated, then
  gives its logits on the training examples, at the same lengths).
  """
  return _predict_step(dataclasses.replace(model.config, dropout_rate=0.0), mesh)


@functools.lru_cache(maxsize=16)
def _predict_step(config: BertConfig, mesh: jax.sharding.Mesh) -> Callable:
  model = BertClassifier(config)

  def predict(params, batch):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"], deterministic=True)

  return jax.jit(predict, out_shardings=sharding.replicated(mesh))
