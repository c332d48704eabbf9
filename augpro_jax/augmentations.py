"""The augmentation registry: one `Augmentation` entry per `--aug` value.

An entry declares what the rest of the code needs to know about an augmentation (its level, whether
it needs the gradient w.r.t. the input embeddings, whether it runs on the host, whether it projects
onto the vocabulary) and builds one augmented copy of a batch inside the jitted step. The config,
the train step, the FLOP count, the training loop and the benchmark all read this registry; adding
an augmentation is one `register(...)` call (a test registers a `[MASK]` replacement this way).

The pure array functions (projection, position choice, MixUp coefficients, FGSM) live in
`augment.py`; this module composes them into the step's "input builders".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import augment
from augpro_jax import mixing
from augpro_jax.config import AugmentConfig
from augpro_jax.errors import UserError
from augpro_jax.knobs import AUGMENTATIONS
from augpro_jax.model import BertClassifier

Params = Any
# An input builder maps (model, params) to (embeds [N, S, d], mask [N, S], types [N, S]). The same
# builder serves teacher and student, each with its own embedding table, so representation-level
# augmentations (MixUp, FGSM) are applied identically in both spaces.
InputBuilder = Callable[[BertClassifier, Params], tuple[jax.Array, jax.Array, jax.Array]]
# Host augmentation (runs in the input pipeline): (texts, step, example_ids) ->
# (copies: [aug_copies][B] texts, shift [B, aug_copies] float32, NaN where nothing was eligible).
HostAugment = Callable[[list, int, np.ndarray], tuple[list, np.ndarray]]


def embed(model: BertClassifier, params: Params, ids: jax.Array) -> jax.Array:
  return model.apply({"params": params}, ids, method=BertClassifier.embed)  # [B, S, d]


def from_ids(ids: jax.Array, mask: jax.Array, types: jax.Array) -> InputBuilder:
  return lambda model, params: (embed(model, params, ids), mask, types)


def concat(*builders: InputBuilder) -> InputBuilder:
  """One builder for the examples of several, in order (one bigger batch, one model pass)."""
  def build(model, params):
    parts = [b(model, params) for b in builders]
    return tuple(jnp.concatenate(xs, axis=0) for xs in zip(*parts))
  return build


@dataclasses.dataclass(frozen=True)
class StepInputs:
  """What an augmentation may read, per device, inside the step. Shapes: B examples, S tokens."""

  ids: jax.Array  # [B, S] int32
  mask: jax.Array  # [B, S]
  types: jax.Array  # [B, S]
  eligible: jax.Array  # [B, S] bool: real, non-special tokens
  gold: jax.Array  # [B, C] gold targets (one-hot or [B, 1] scores)
  batch: dict[str, jax.Array]  # the whole host batch (host augmentations put their copies here)
  table: Optional[jax.Array]  # [V, d] projection table, no gradient (token-level entries)
  candidate_mask: jax.Array  # [V] bool: ids a projection may return
  knobs: AugmentConfig
  delta: Optional[jax.Array] = None  # [B, S, d_student] FGSM step, for `needs_input_grad` entries

  def token_kwargs(self) -> dict[str, Any]:
    k = self.knobs
    return dict(shift_degree=k.shift_degree, metric=k.projection_metric,
                candidate_mask=self.candidate_mask, chunk_size=k.projection_chunk,
                rounding=k.shift_rounding, search=k.projection_search,
                recall_target=k.projection_recall)


@dataclasses.dataclass(frozen=True)
class Copy:
  """One augmented copy of the batch: its inputs, its gold targets and its measured shift.

  Copies made on the device from the batch's own token positions also carry their ids, and
  AugPro-Mix the partner token each position met, for the projection profile (`token_profile`).
  """

  build: InputBuilder
  targets: jax.Array  # [B, C]
  shift: Optional[tuple[jax.Array, jax.Array]] = None  # (fraction changed [B], has eligible [B])
  ids: Optional[jax.Array] = None  # [B, S] the augmented ids, position for position
  met: Optional[jax.Array] = None  # [B, S] partner token mixed in at each chosen position, else -1


# make_copy(inputs, copy index, keys [B]: this copy's per-example keys, this copy's partner key)
MakeCopy = Callable[[StepInputs, int, jax.Array, jax.Array], Copy]


@dataclasses.dataclass(frozen=True)
class Augmentation:
  name: str
  level: str  # "none" | "representation" (virtual embeddings) | "token" (real token ids)
  make_copy: Optional[MakeCopy] = None
  needs_input_grad: bool = False  # built from d(loss)/d(student input embeddings) (FGSM family)
  projects: bool = False  # projects position_budget(p, S) positions per example onto the vocabulary
  # Built on the host in the input pipeline: make(cfg) -> HostAugment.
  make_host_augment: Optional[Callable[[Any], HostAugment]] = None
  # check(knobs, student_width, teacher_width or None): raise UserError if the models cannot run it.
  check: Optional[Callable[[AugmentConfig, int, Optional[int]], None]] = None
  # Distinct candidate tokens a projection needs (--projection_vocab=task): the own token is
  # excluded, so at least one more; knn draws among k neighbours.
  candidates_needed: Callable[[AugmentConfig], int] = lambda knobs: 2
  help: str = ""

  @property
  def reports_shift(self) -> bool:
    return self.level == "token"


_REGISTRY: dict[str, Augmentation] = {}
ALIASES = {"augpro": "augpro_mix"}  # docs/design.md ("Which AugPro is `augpro`") says why


def register(entry: Augmentation) -> Augmentation:
  if entry.level not in ("none", "representation", "token"):
    raise ValueError(f"unknown augmentation level {entry.level!r}")
  if entry.level != "none" and entry.make_copy is None:
    raise ValueError(f"augmentation {entry.name!r} needs make_copy")
  _REGISTRY[entry.name] = entry
  AUGMENTATIONS.set(choices())  # what --aug and --benchmark_augs accept (config.py is below us)
  return entry


def unregister(name: str) -> None:
  _REGISTRY.pop(name, None)
  AUGMENTATIONS.set(choices())


def resolve(name: str) -> str:
  return ALIASES.get(name, name)


def get(name: str) -> Augmentation:
  name = resolve(name)
  if name not in _REGISTRY:
    raise UserError(f"unknown --aug={name!r}; choose one of: {', '.join(choices())}")
  return _REGISTRY[name]


def names() -> tuple[str, ...]:
  """Registered augmentations, in registration order."""
  return tuple(_REGISTRY)


def choices() -> tuple[str, ...]:
  """What --aug accepts: every registered name and its aliases."""
  return names() + tuple(a for a, target in ALIASES.items() if target in _REGISTRY)


def device_names() -> tuple[str, ...]:
  """The augmentations made inside the step (not on the host): the benchmark's default set."""
  return tuple(name for name, entry in _REGISTRY.items() if entry.make_host_augment is None)


def projecting_names() -> tuple[str, ...]:
  """The augmentations that project onto the vocabulary (`projects=True`)."""
  return tuple(name for name, entry in _REGISTRY.items() if entry.projects)


# ----------------------------------------------------------------------------------------------
# The entries.
# ----------------------------------------------------------------------------------------------


def token_copy(inputs: StepInputs, new_ids: jax.Array, met: Optional[jax.Array] = None) -> Copy:
  """A token-level copy: new ids [B, S] with the original mask, gold targets, measured shift."""
  new_ids = jax.lax.stop_gradient(new_ids)
  return Copy(from_ids(new_ids, inputs.mask, inputs.types), inputs.gold,
              augment.measured_shift(inputs.ids, new_ids, inputs.eligible), ids=new_ids, met=met)


def _mixup(inputs: StepInputs, copy: int, keys: jax.Array, partner_key: jax.Array
           ) -> Copy:
  del copy
  ids, mask, types = inputs.ids, inputs.mask, inputs.types
  partner = mixing.mixup_partners(partner_key, ids.shape[0])
  lam = mixing.example_lambdas(keys, inputs.knobs.mix_alpha)  # [B]
  mixed_mask = jnp.maximum(mask, mask[partner])

  def build(model, params):
    e = embed(model, params, ids)
    return lam[:, None, None] * e + (1 - lam[:, None, None]) * e[partner], mixed_mask, types
  return Copy(build, lam[:, None] * inputs.gold + (1 - lam[:, None]) * inputs.gold[partner])


def _fgsm(inputs: StepInputs, copy: int, keys: jax.Array, partner_key: jax.Array
          ) -> Copy:
  del copy
  del keys, partner_key  # deterministic given the gradient
  ids, mask, types, delta = inputs.ids, inputs.mask, inputs.types, inputs.delta
  return Copy(lambda model, params: (embed(model, params, ids) + delta, mask, types), inputs.gold)


def _augpro_mix(inputs: StepInputs, copy: int, keys: jax.Array, partner_key: jax.Array
                ) -> Copy:
  del copy
  k = inputs.knobs
  partner = mixing.partner_cycle(partner_key, inputs.ids.shape[0])
  lam = mixing.mix_lambdas(keys, augment.position_budget(k.shift_degree, inputs.ids.shape[-1]),
                           rule=k.mix_lambda, alpha=k.mix_alpha, value=k.mix_lambda_value,
                           scope=k.mix_lambda_per)  # [B, 1] or [B, K]
  new, met = augment.mix_and_project(keys, inputs.ids, inputs.eligible, partner, lam, inputs.table,
                                     exclude_original=k.exclude_original,
                                     align=k.mix_partner_align, **inputs.token_kwargs())
  return token_copy(inputs, new, met)


def _augpro_fgsm(inputs: StepInputs, copy: int, keys: jax.Array, partner_key: jax.Array
                 ) -> Copy:
  del copy
  del partner_key
  new = augment.augpro_perturb(keys, inputs.ids, inputs.eligible, inputs.delta, inputs.table,
                               exclude_original=inputs.knobs.exclude_original,
                               **inputs.token_kwargs())
  return token_copy(inputs, new)


def _knn(inputs: StepInputs, copy: int, keys: jax.Array, partner_key: jax.Array
         ) -> Copy:
  del copy
  del partner_key
  new = augment.knn_replace(keys, inputs.ids, inputs.eligible, inputs.table, k=inputs.knobs.knn_k,
                            **inputs.token_kwargs())
  return token_copy(inputs, new)


def _synonym(inputs: StepInputs, c: int, keys: jax.Array, partner_key: jax.Array) -> Copy:
  """The copy was made on the host (`_synonym_host`); the batch carries it as aug_* [B, copies, S]."""
  del keys, partner_key
  b = inputs.batch
  host_shift = b["aug_shift"][:, c]  # [B], NaN where nothing was eligible
  return Copy(from_ids(b["aug_input_ids"][:, c], b["aug_attention_mask"][:, c],
                       b["aug_token_type_ids"][:, c]), inputs.gold,
              (jnp.nan_to_num(host_shift), ~jnp.isnan(host_shift)))


def _synonym_host(cfg: Any) -> HostAugment:
  """WordNet synonym replacement, in the prefetching input pipeline."""
  from augpro_jax import synonyms  # pylint: disable=g-import-not-at-top

  table = synonyms.load_wordnet(cfg.wordnet_dir)

  def host_augment(texts, step, example_ids):
    copies = [[None] * len(texts) for _ in range(cfg.aug_copies)]
    shift = np.zeros((len(texts), cfg.aug_copies), np.float32)
    for i, (text, example_id) in enumerate(zip(texts, example_ids)):
      for c in range(cfg.aug_copies):
        # Seeded by (seed, step, example, copy): independent of the process/device layout.
        rng = np.random.default_rng([cfg.seed, step, int(example_id), c])
        new, s = synonyms.augment_texts([text], cfg.shift_degree, rng, table,
                                         rounding=cfg.shift_rounding)
        copies[c][i] = new[0]
        shift[i, c] = s[0]
    return copies, shift

  return host_augment


def _same_width(what: str) -> Callable[[AugmentConfig, int, Optional[int]], None]:
  def check(knobs, student_width, teacher_width):
    del knobs
    if teacher_width is not None and teacher_width != student_width:
      raise UserError(f"{what}; the teacher can only take the same step when both have the same "
                      "width (--student_hidden)")
  return check


def _augpro_fgsm_check(knobs: AugmentConfig, student_width: int, teacher_width: Optional[int]):
  if knobs.projection_table == "teacher" and teacher_width is not None and \
     teacher_width != student_width:
    raise UserError("--projection_table=teacher with --aug=augpro_fgsm needs --student_hidden equal "
                    "to the teacher's width")


register(Augmentation("none", "none", help="No augmentation."))
register(Augmentation("mixup", "representation", _mixup,
                      help="MixUp of two examples' word embeddings and targets."))
register(Augmentation("fgsm", "representation", _fgsm, needs_input_grad=True,
                      check=_same_width("--aug=fgsm moves the student's embeddings"),
                      help="One FGSM step on the word embeddings along the loss gradient."))
register(Augmentation("augpro_mix", "token", _augpro_mix, projects=True,
                      help="AugPro-Mix: MixUp at chosen positions, projected to tokens."))
register(Augmentation("augpro_fgsm", "token", _augpro_fgsm, needs_input_grad=True, projects=True,
                      check=_augpro_fgsm_check,
                      help="AugPro-FGSM: an FGSM step at chosen positions, projected to tokens."))
register(Augmentation("knn", "token", _knn, projects=True,
                      candidates_needed=lambda knobs: knobs.knn_k + 1,
                      help="Each chosen token becomes one of its k nearest tokens."))
register(Augmentation("synonym", "token", _synonym, make_host_augment=_synonym_host,
                      help="WordNet synonym replacement on the host."))
