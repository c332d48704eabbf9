"""Run token-level augmentation variants outside the train step and profile what they produce.

Shared by show_augmentations.py (three sentences and a profile line per variant) and
projection_profile.py (the sweep). A variant is a registry entry plus `AugmentConfig` overrides; it
runs through the entry's own `make_copy`, so what is measured here is what the step trains on.

The setting is that of a distillation run at its first step: the projection table is the pretrained
MiniLM's word embeddings (the student starts from them), the FGSM direction is the input gradient
of the 2-layer student initialised from the pretrained MiniLM, against the teacher given by
`--teacher_ckpt` (a fine-tuned one; without it the pretrained MiniLM with an untrained head).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from augpro_jax import augment
from augpro_jax import augmentations
from augpro_jax import checkpoints
from augpro_jax import config as config_lib
from augpro_jax import data as data_lib
from augpro_jax import hf_io
from augpro_jax import input_pipeline as pipeline
from augpro_jax import losses
from augpro_jax import model as model_lib
from augpro_jax import students
from augpro_jax import token_profile


@dataclasses.dataclass(frozen=True)
class Variant:
  """A registry entry with `AugmentConfig` overrides (`projection_vocab` picks the candidates)."""

  aug: str
  knobs: tuple[tuple[str, Any], ...] = ()

  @property
  def label(self) -> str:
    return " ".join([self.aug] + [f"{k}={flag_value(v)}" for k, v in self.knobs])

  def config(self, base: config_lib.AugmentConfig) -> config_lib.AugmentConfig:
    return dataclasses.replace(base, **dict(self.knobs))


def variant(aug: str, **knobs) -> Variant:
  return Variant(aug, tuple(knobs.items()))


def flag_value(value: Any) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


@dataclasses.dataclass
class Setup:
  """Tokenizer, tables, masks and models, loaded once."""

  tokenizer: Any
  train: pipeline.Tokenized  # what a run with --train_size loads: the task vocabulary's source
  table: jax.Array  # [V, d] the projection table (pretrained word embeddings)
  is_special: np.ndarray  # [V]
  candidates: dict[str, np.ndarray]  # "full" | "task" -> [V] bool
  token_flags: tuple[np.ndarray, np.ndarray]  # (is_continuation, is_non_ascii) [V]
  teacher: model_lib.BertClassifier
  teacher_params: Any
  student: model_lib.BertClassifier
  student_params: Any
  max_seq_len: int


def load(glue_dir: str, train_size: int, max_seq_len: int, teacher_ckpt: Optional[str],
         seed: int = 0) -> Setup:
  cfg = config_lib.Config(task="sst2", glue_dir=glue_dir, train_size=train_size,
                          max_seq_len=max_seq_len, seed=seed).validate()
  task = data_lib.resolve_task(cfg)
  teacher_dir = hf_io.resolve_pretrained_dir(cfg.teacher)
  tokenizer = pipeline.load_tokenizer(teacher_dir)
  train = pipeline.tokenize(data_lib.load_split(cfg, task, "train"), tokenizer, max_seq_len)
  p_config, p_params = hf_io.load_pretrained(str(teacher_dir), num_labels=2, dropout_rate=0.0)
  t_config, t_params = p_config, p_params
  if teacher_ckpt:
    t_config, t_params, _ = checkpoints.load_exported(teacher_ckpt)
    t_config = dataclasses.replace(t_config, dropout_rate=0.0)
  s_config = dataclasses.replace(p_config, num_layers=2)
  s_params = students.student_from_teacher(s_config, p_config, p_params, jax.random.PRNGKey(1))
  vocab = p_config.vocab_size
  is_special, is_candidate = pipeline.vocab_masks(tokenizer, vocab)
  candidates = {"full": is_candidate,
                "task": pipeline.task_candidates(is_candidate, is_special, train)}
  return Setup(tokenizer, train, model_lib.word_embedding_table(s_params), is_special, candidates,
               pipeline.token_flags(tokenizer, vocab), model_lib.BertClassifier(t_config),
               t_params, model_lib.BertClassifier(s_config), s_params, max_seq_len)


def encode(setup: Setup, texts: list[tuple[str, ...]], labels: np.ndarray) -> dict[str, np.ndarray]:
  ids, mask, types, _ = pipeline.encode_texts(setup.tokenizer, texts, setup.max_seq_len)
  return {"ids": ids, "mask": mask, "types": types, "labels": np.asarray(labels)}


def input_gradients(setup: Setup, batch: dict[str, np.ndarray], loss: str,
                    chunk: int = 250) -> np.ndarray:
  """d(loss)/d(student input embeddings) [N, S, d]: loss is kd (KL(teacher || student), T = 1),
  ce (gold labels) or both, as `--fgsm_loss` in a distillation step with --alpha_ce=0."""

  @jax.jit
  def grad(ids, mask, types, labels):
    t_logits = setup.teacher.apply({"params": setup.teacher_params}, ids, mask, types)
    gold = losses.label_targets(labels, 2, False)
    embeds = setup.student.apply({"params": setup.student_params}, ids,
                                 method=model_lib.BertClassifier.embed)

    def total(delta):
      logits = setup.student.apply({"params": setup.student_params}, embeds + delta, mask, types,
                                   method=model_lib.BertClassifier.apply_embeddings)
      kd = losses.kd_loss(logits, t_logits, temperature=1.0, is_regression=False)
      ce = losses.target_loss(logits, gold, is_regression=False)
      return jnp.sum({"kd": kd, "ce": ce, "both": kd + ce}[loss])
    return jax.grad(total)(jnp.zeros_like(embeds))

  parts = [np.asarray(grad(*(jnp.asarray(batch[k][i:i + chunk])
                             for k in ("ids", "mask", "types", "labels"))))
           for i in range(0, len(batch["ids"]), chunk)]
  return np.concatenate(parts)


def run_variant(setup: Setup, v: Variant, batch: dict[str, np.ndarray], base: config_lib.AugmentConfig,
                grads: Optional[dict[str, np.ndarray]] = None, seed: int = 0,
                chunk: int = 250) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(augmented ids [N, S], partner token met at each chosen position [N, S] or None).

  Examples are processed `chunk` at a time; each chunk is one device batch (AugPro-Mix partners
  are drawn within it). Example i's key is fold_in(PRNGKey(seed), i), as the step's per-example
  keys, so a variant's positions and λ do not depend on the chunking.
  """
  knobs = v.config(base)
  entry = augmentations.get(v.aug)
  mask_v = jnp.asarray(setup.candidates[knobs.projection_vocab])
  is_special = jnp.asarray(setup.is_special)
  eps_grad = None
  if entry.needs_input_grad:
    eps_grad = grads[knobs.fgsm_loss]

  @jax.jit
  def make(ids, mask, types, delta, example_index, partner_key):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(example_index)
    inputs = augmentations.StepInputs(
        ids=ids, mask=mask, types=types, eligible=augment.eligible_positions(ids, mask, is_special),
        gold=jnp.zeros((ids.shape[0], 2)), batch={}, table=setup.table, candidate_mask=mask_v,
        knobs=knobs, delta=None if delta is None else augment.fgsm_delta(delta, knobs.fgsm_eps))
    copy = entry.make_copy(inputs, 0, keys, partner_key)
    return copy.ids, copy.met

  out_ids, out_met = [], []
  for start in range(0, len(batch["ids"]), chunk):
    rows = slice(start, start + chunk)
    index = jnp.arange(start, start + len(batch["ids"][rows]))
    delta = None if eps_grad is None else jnp.asarray(eps_grad[rows])
    ids, met = make(jnp.asarray(batch["ids"][rows]), jnp.asarray(batch["mask"][rows]),
                    jnp.asarray(batch["types"][rows]), delta, index,
                    jax.random.fold_in(jax.random.PRNGKey(seed + 1), start))
    out_ids.append(np.asarray(ids))
    out_met.append(None if met is None else np.asarray(met))
  return np.concatenate(out_ids), None if out_met[0] is None else np.concatenate(out_met)


def nearest_of(setup: Setup, candidates: str, ids: np.ndarray) -> np.ndarray:
  """[V] int32: the nearest other candidate of each id occurring in `ids` (-1 for the others)."""
  present = np.unique(ids)
  nearest = augment.nearest_tokens(setup.table[jnp.asarray(present)], setup.table,
                                   exclude=jnp.asarray(present),
                                   candidate_mask=jnp.asarray(setup.candidates[candidates]))
  out = np.full(setup.table.shape[0], -1, np.int32)
  out[present] = np.asarray(nearest)
  return out


def profile(setup: Setup, batch: dict[str, np.ndarray], new_ids: np.ndarray,
            met: Optional[np.ndarray], nearest: np.ndarray) -> dict[str, Any]:
  """The profile of one variant's output (`token_profile`), with the nearest-neighbour share and
  the share of changed tokens that are neither the partner's token nor the nearest neighbour."""
  ids = batch["ids"]
  eligible = np.asarray(augment.eligible_positions(jnp.asarray(ids), jnp.asarray(batch["mask"]),
                                                   jnp.asarray(setup.is_special)))
  counts = token_profile.profile_counts(jnp.asarray(ids), jnp.asarray(new_ids),
                                        jnp.asarray(eligible),
                                        None if met is None else jnp.asarray(met),
                                        *(jnp.asarray(f) for f in setup.token_flags))
  out = token_profile.shares(np.asarray(counts))
  changed = (ids != new_ids) & eligible
  is_nearest = changed & (new_ids == nearest[ids])
  is_partner = changed & (new_ids == met) if met is not None else np.zeros_like(changed)
  total = int(changed.sum())
  out["nearest_share"] = float(is_nearest.sum()) / total if total else None
  out["other_share"] = float((changed & ~is_nearest & ~is_partner).sum()) / total if total else None
  # How varied the outputs are: distinct ids per changed token (a projection that keeps returning
  # the same few "hub" tokens scores low).
  out["distinct_share"] = len(np.unique(new_ids[changed])) / total if total else None
  shift, ok = augment.measured_shift(jnp.asarray(ids), jnp.asarray(new_ids), jnp.asarray(eligible))
  out["measured_shift"] = float(np.asarray(shift)[np.asarray(ok)].mean())
  return out


def non_ascii_share(setup: Setup, batch: dict[str, np.ndarray]) -> float:
  """Share of the data's own eligible tokens (occurrences) that are non-ASCII."""
  ids, mask = batch["ids"], batch["mask"]
  real = (mask > 0) & ~setup.is_special[ids]
  return float(setup.token_flags[1][ids[real]].mean())


def decode(setup: Setup, ids: np.ndarray, mask: np.ndarray) -> str:
  return setup.tokenizer.decode([int(i) for i, m in zip(ids, mask) if m], skip_special_tokens=True)
