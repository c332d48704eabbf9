"""Augmentations for distillation, all pure functions that run inside the jitted train step.

The centrepiece is `nearest_tokens`: project vectors to their nearest vocabulary token by scanning the
embedding table in chunks, so peak memory is `[positions, chunk]` and never `[positions, vocab]`.

Token-level augmentations (AugPro-Mix, AugPro-FGSM, KNN replacement) change exactly m eligible
positions of each example, chosen uniformly at random, where m = floor(p * n + u): u ~ U[0, 1)
("stochastic" rounding, the default: E[m] = p * n, so the measured shift is unbiased even on short
sentences) or u = 0.5 ("nearest"). Only those
positions are gathered and projected, so the projection's cost scales with the shift degree: the
number of projected positions per example is a static budget `position_budget(p, seq_len)`.

Randomness is drawn per example from `fold_in(step_key, example_id)`, so an example gets the same
augmentation whatever the device layout (1 device or 8, one process or several).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from augpro_jax import config
from augpro_jax import mixing
from augpro_jax import sharding

# ----------------------------------------------------------------------------------------------
# Projection: nearest vocabulary token(s), chunked over the vocabulary.
# ----------------------------------------------------------------------------------------------


def _chunk_scores(vectors: jax.Array, chunk: jax.Array, metric: str) -> jax.Array:
  """Higher is nearer. vectors [P, d] f32, chunk [C, d] f32 -> [P, C] f32."""
  if metric == "cosine":
    vectors = vectors * jax.lax.rsqrt(jnp.sum(vectors * vectors, -1, keepdims=True) + 1e-12)
    chunk = chunk * jax.lax.rsqrt(jnp.sum(chunk * chunk, -1, keepdims=True) + 1e-12)
  scores = jnp.einsum("pd,cd->pc", vectors, chunk, precision=jax.lax.Precision.HIGHEST)
  if metric == "l2":
    # -||v - t||^2 = 2 v.t - ||t||^2 - ||v||^2; the last term is the same for every candidate.
    scores = 2.0 * scores - jnp.sum(chunk * chunk, -1)[None, :]
  elif metric not in config.choices("projection_metric"):
    raise ValueError(f"unknown projection metric {metric!r}")
  return scores


def nearest_tokens_topk(
    vectors: jax.Array,
    table: jax.Array,
    k: int,
    *,
    metric: str = "l2",
    exclude: Optional[jax.Array] = None,
    candidate_mask: Optional[jax.Array] = None,
    chunk_size: int = 2048,
    search: str = "exact",
    recall_target: float = 0.95,
) -> jax.Array:
  """Ids of the `k` nearest rows of `table` for each vector, nearest first.

  vectors [..., d]; table [vocab, d]; exclude [...] ids that may not be returned (e.g. the original
  token); candidate_mask [vocab] bool, False rows are never returned (special and unused tokens).
  Returns int32 [..., k]. Scores are computed in float32 whatever the input dtype. The vocabulary is
  scanned in chunks of `chunk_size` rows with a running top-k, so memory is O(positions * chunk).
  Ties go to the lower id, as `numpy.argmax` does.

  search="approx" takes each chunk's best with `jax.lax.approx_max_k` (the TPU-KNN algorithm) at
  `recall_target`, over the same chunks and candidate mask; ties then go to either id. XLA runs the
  approximate algorithm on TPU only; other backends lower it to an exact top-k. For k=1 it is
  exact everywhere: the best of the bins' maxima is the maximum.

  Inside the train step on a mesh with --mesh_fsdp > 1 the table is split over `fsdp`: by rows
  when fsdp divides the vocabulary, and then each device scans only its rows and the shards' top-k
  merge exactly (`_sharded_topk`, the ids of one search); otherwise by columns, and XLA sums each
  chunk's partial scores. Neither gathers the table on a device.
  """
  if search not in config.choices("projection_search"):
    raise ValueError(f"unknown projection search {search!r}")
  lead_shape, dim = vectors.shape[:-1], vectors.shape[-1]
  if table.shape[-1] != dim:
    raise ValueError(f"vectors have width {dim} but the table has {table.shape[-1]}")
  flat = vectors.reshape(-1, dim).astype(jnp.float32)  # [P, d]
  # -1 is no id: nothing excluded.
  excl = jnp.full(flat.shape[:1], -1, jnp.int32) if exclude is None else \
      exclude.reshape(-1).astype(jnp.int32)  # [P]
  if candidate_mask is None:
    candidate_mask = jnp.ones(table.shape[:1], bool)
  search_rows = functools.partial(_scan_topk, k=k, metric=metric, chunk_size=chunk_size,
                                  search=search, recall_target=recall_target)
  shards = sharding.auto_fsdp_size()
  if shards > 1 and table.shape[0] % shards == 0:  # rows split (sharding.param_spec)
    _, best_ids = _sharded_topk(search_rows, flat, table.astype(jnp.float32), excl,
                                candidate_mask, shards, k)
  else:
    _, best_ids = search_rows(flat, table.astype(jnp.float32), excl, candidate_mask, 0)
  return best_ids.reshape(*lead_shape, k)


def _scan_topk(flat: jax.Array, table: jax.Array, excl: jax.Array, candidate_mask: jax.Array,
               offset: jax.Array | int, *, k: int, metric: str, chunk_size: int, search: str,
               recall_target: float) -> tuple[jax.Array, jax.Array]:
  """(scores [P, k], ids [P, k]) of the best rows of `table` [V, d] (ids `offset` + row), nearest
  first, scanning the rows in chunks with a running top-k: memory O(P * chunk)."""
  vocab, num_positions = table.shape[0], flat.shape[0]
  chunk = max(1, min(int(chunk_size), vocab))
  num_chunks = -(-vocab // chunk)

  def body(carry, chunk_index):
    best_scores, best_ids = carry  # [P, k], [P, k]
    nominal_start = chunk_index * chunk
    # The last chunk is clamped to end at `vocab` (dynamic_slice clamps); rows it re-reads from the
    # previous chunk are masked below, so every id is considered exactly once and no copy is padded.
    start = jnp.minimum(nominal_start, vocab - chunk)
    rows = jax.lax.dynamic_slice_in_dim(table, start, chunk, axis=0)  # [C, d]
    local = start + jnp.arange(chunk, dtype=jnp.int32)  # [C]
    ids = offset + local
    ok = jax.lax.dynamic_slice_in_dim(candidate_mask, start, chunk) & (local >= nominal_start)
    with jax.named_scope("chunk_scores"):
      scores = _chunk_scores(flat, rows, metric)  # [P, C]
    keep = ok[None, :] & (ids[None, :] != excl[:, None])
    scores = jnp.where(keep, scores, -jnp.inf)
    if search == "approx":
      # This chunk's approximate top-k [P, min(k, C)], merged exactly with the running best.
      chunk_top, chunk_pos = jax.lax.approx_max_k(scores, min(k, chunk), recall_target=recall_target)
      merged_scores = jnp.concatenate([best_scores, chunk_top], axis=-1)
      merged_ids = jnp.concatenate([best_ids, ids[chunk_pos]], axis=-1)
    elif k == 1:
      chunk_best = jnp.max(scores, axis=-1, keepdims=True)
      chunk_arg = ids[jnp.argmax(scores, axis=-1)][:, None]
      better = chunk_best > best_scores  # strict: earlier (lower) ids win ties
      return (jnp.where(better, chunk_best, best_scores), jnp.where(better, chunk_arg, best_ids)), None
    else:  # running best (lower ids, listed first) and this chunk; top_k keeps the first on ties
      merged_scores = jnp.concatenate([best_scores, scores], axis=-1)
      merged_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids, scores.shape)], axis=-1)
    top_scores, top_pos = jax.lax.top_k(merged_scores, k)
    return (top_scores, jnp.take_along_axis(merged_ids, top_pos, axis=-1)), None

  init = (jnp.full((num_positions, k), -jnp.inf, jnp.float32),
          jnp.zeros((num_positions, k), jnp.int32))
  return jax.lax.scan(body, init, jnp.arange(num_chunks, dtype=jnp.int32))[0]


def _sharded_topk(search_rows: Callable, flat: jax.Array, table: jax.Array, excl: jax.Array,
                  candidate_mask: jax.Array, shards: int, k: int) -> tuple[jax.Array, jax.Array]:
  """`search_rows` with the table's rows split over `fsdp` (`shards` divides them): each device
  searches its rows, then the shards' top-k [P, shards * k] merge exactly."""
  rows = table.shape[0] // shards

  def local(flat, table, excl, candidate_mask):
    scores, ids = search_rows(flat, table, excl, candidate_mask,
                              jax.lax.axis_index(sharding.FSDP) * rows)  # [P, k] each
    # In shard order, so the lower id wins a tie, as in one search over the whole table.
    scores = jax.lax.all_gather(scores, sharding.FSDP, axis=1, tiled=True)  # [P, shards * k]
    ids = jax.lax.all_gather(ids, sharding.FSDP, axis=1, tiled=True)
    top, pos = jax.lax.top_k(scores, k)
    return top, jnp.take_along_axis(ids, pos, axis=-1)

  by_rows = P(sharding.FSDP)
  return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(),
                       in_specs=(P(), by_rows, P(), by_rows), out_specs=(P(), P()),
                       axis_names={sharding.FSDP}, check_vma=False)(flat, table, excl,
                                                                    candidate_mask)


def nearest_tokens(vectors: jax.Array, table: jax.Array, **search: Any) -> jax.Array:
  """Project each vector [..., d] to the id of its nearest row of `table` [vocab, d]: int32 [...].

  The k=1 case of `nearest_tokens_topk` (a running argmax), with its keyword arguments (`metric`,
  `exclude`, `candidate_mask`, `chunk_size`, `search`, `recall_target`).
  """
  return nearest_tokens_topk(vectors, table, 1, **search)[..., 0]


# ----------------------------------------------------------------------------------------------
# Which positions change: exactly round(p * n) eligible ones per example.
# ----------------------------------------------------------------------------------------------


def position_budget(shift_degree: float, seq_len: int) -> int:
  """Static number of positions gathered per example: m <= ceil(p * n) <= ceil(p * seq_len)."""
  return max(1, min(seq_len, int(math.ceil(shift_degree * seq_len - 1e-9))))


def eligible_positions(input_ids: jax.Array, attention_mask: jax.Array,
                       is_special: jax.Array) -> jax.Array:
  """[B, S] bool: real tokens that augmentation may change (not padding, not [CLS]/[SEP]/...)."""
  return (attention_mask > 0) & ~is_special[input_ids]


def change_count(keys: jax.Array, eligible: jax.Array, shift_degree: float,
                 rounding: str = "stochastic") -> jax.Array:
  """m [B]: how many eligible tokens each example changes, floor(p * n + u)."""
  n = jnp.sum(eligible, -1).astype(jnp.float32)
  if rounding == "stochastic":
    u = jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, 7)))(keys)
  elif rounding == "nearest":
    u = 0.5
  else:
    raise ValueError(f"unknown rounding {rounding!r}")
  return jnp.minimum(jnp.floor(shift_degree * n + u), n).astype(jnp.int32)


def choose_positions(keys: jax.Array, eligible: jax.Array, shift_degree: float,
                     budget: int, rounding: str = "stochastic") -> tuple[jax.Array, jax.Array]:
  """Pick m = change_count(...) eligible positions per example uniformly at random.

  keys [B] per-example PRNG keys; eligible [B, S]. Returns positions [B, budget] int32 and
  chosen [B, budget] bool (the first m entries of each row are the chosen ones).
  """
  uniform = jax.vmap(lambda key: jax.random.uniform(key, eligible.shape[-1:]))(keys)  # [B, S]
  scores = jnp.where(eligible, uniform, -1.0)
  _, positions = jax.lax.top_k(scores, budget)  # [B, budget], eligible ones first in random order
  count = change_count(keys, eligible, shift_degree, rounding)  # [B]
  chosen = jnp.arange(budget)[None, :] < count[:, None]
  return positions.astype(jnp.int32), chosen


def scatter_tokens(input_ids: jax.Array, positions: jax.Array, chosen: jax.Array,
                   new_ids: jax.Array) -> jax.Array:
  """Write new_ids [B, K] at positions [B, K] where chosen; all other tokens stay. -> [B, S]."""
  old = jnp.take_along_axis(input_ids, positions, axis=-1)
  values = jnp.where(chosen, new_ids, old)
  rows = jnp.arange(input_ids.shape[0])[:, None]
  return input_ids.at[rows, positions].set(values)


def measured_shift(original_ids: jax.Array, augmented_ids: jax.Array,
                   eligible: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example fraction of eligible tokens that differ. Returns (fraction [B], has_eligible [B])."""
  changed = jnp.sum((original_ids != augmented_ids) & eligible, -1)
  count = jnp.sum(eligible, -1)
  return changed / jnp.maximum(count, 1), count > 0


# ----------------------------------------------------------------------------------------------
# The augmentations themselves.
# ----------------------------------------------------------------------------------------------


def augpro_mix(keys: jax.Array, input_ids: jax.Array, eligible: jax.Array, partner: jax.Array,
               lam: jax.Array, table: jax.Array, **kwargs) -> jax.Array:
  """AugPro-Mix's augmented ids [B, S]; see `mix_and_project`."""
  return mix_and_project(keys, input_ids, eligible, partner, lam, table, **kwargs)[0]


def mix_and_project(keys: jax.Array, input_ids: jax.Array, eligible: jax.Array, partner: jax.Array,
                    lam: jax.Array, table: jax.Array, *, shift_degree: float, metric: str,
                    candidate_mask: jax.Array, exclude_original: bool, chunk_size: int,
                    rounding: str = "stochastic", align: str = "wrap", search: str = "exact",
                    recall_target: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """AugPro-Mix: mix each chosen position's embedding with a partner token's, project to a token.

  input_ids [B, S]; partner [B] index of the example to mix with; lam [B], [B, 1] or [B, K]
  (per example or per chosen position, K = position_budget). The partner token a position meets
  follows `align` (`mixing.partner_tokens`: always a real token of the partner). Only the chosen
  positions [B, K] are gathered, mixed and projected.
  Returns (augmented ids [B, S], the partner token each chosen position mixed with [B, S], -1 at
  the other positions).
  """
  budget = position_budget(shift_degree, input_ids.shape[-1])
  positions, chosen = choose_positions(keys, eligible, shift_degree, budget, rounding)
  own = jnp.take_along_axis(input_ids, positions, -1)  # [B, K]
  other = mixing.partner_tokens(input_ids, eligible, partner, positions, align)  # [B, K]
  lam = lam.reshape(lam.shape[0], -1)[..., None]  # [B, 1 or K, 1]
  mixed = lam * table[own] + (1.0 - lam) * table[other]  # [B, K, d]
  with jax.named_scope("projection"):
    new = nearest_tokens(mixed, table, metric=metric, candidate_mask=candidate_mask,
                         exclude=own if exclude_original else None, chunk_size=chunk_size,
                         search=search, recall_target=recall_target)
  met = scatter_tokens(jnp.full_like(input_ids, -1), positions, chosen, other)
  return scatter_tokens(input_ids, positions, chosen, new), met


def augpro_perturb(keys: jax.Array, input_ids: jax.Array, eligible: jax.Array, delta: jax.Array,
                   table: jax.Array, *, shift_degree: float, metric: str,
                   candidate_mask: jax.Array, exclude_original: bool, chunk_size: int,
                   rounding: str = "stochastic", search: str = "exact",
                   recall_target: float = 0.95) -> jax.Array:
  """AugPro-FGSM: move chosen positions' embeddings by delta [B, S, d], project to tokens."""
  budget = position_budget(shift_degree, input_ids.shape[-1])
  positions, chosen = choose_positions(keys, eligible, shift_degree, budget, rounding)
  own = jnp.take_along_axis(input_ids, positions, -1)  # [B, K]
  moved = table[own] + jnp.take_along_axis(delta, positions[..., None], axis=1)  # [B, K, d]
  with jax.named_scope("projection"):
    new = nearest_tokens(moved, table, metric=metric, candidate_mask=candidate_mask,
                         exclude=own if exclude_original else None, chunk_size=chunk_size,
                         search=search, recall_target=recall_target)
  return scatter_tokens(input_ids, positions, chosen, new)


def knn_replace(keys: jax.Array, input_ids: jax.Array, eligible: jax.Array, table: jax.Array, *,
                shift_degree: float, k: int, metric: str, candidate_mask: jax.Array,
                chunk_size: int, rounding: str = "stochastic", search: str = "exact",
                recall_target: float = 0.95) -> jax.Array:
  """KNN replacement: each chosen token becomes one of its k nearest other tokens, at random."""
  budget = position_budget(shift_degree, input_ids.shape[-1])
  positions, chosen = choose_positions(keys, eligible, shift_degree, budget, rounding)
  own = jnp.take_along_axis(input_ids, positions, -1)  # [B, K]
  with jax.named_scope("projection"):
    neighbours = nearest_tokens_topk(table[own], table, k, metric=metric, exclude=own,
                                     candidate_mask=candidate_mask, chunk_size=chunk_size,
                                     search=search, recall_target=recall_target)
  pick_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)
  pick = jax.vmap(lambda key: jax.random.randint(key, (budget,), 0, k))(pick_keys)  # [B, K]
  new = jnp.take_along_axis(neighbours, pick[..., None], -1)[..., 0]
  return scatter_tokens(input_ids, positions, chosen, new)


def fgsm_delta(grad_embeds: jax.Array, eps: float) -> jax.Array:
  """The FGSM step eps * sign(grad) [B, S, d], with no gradient flowing back through it."""
  return jax.lax.stop_gradient(eps * jnp.sign(grad_embeds))
