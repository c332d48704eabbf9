"""Mixing's choices, for AugPro-Mix and MixUp: who mixes with whom, which partner token a
position meets, and λ (one `fold` for both). Pure functions used inside the jitted step.

Partners. Each example mixes with another example of the (per-device) batch, drawn as a random
cycle through the batch (`partner_cycle`), so no example mixes with itself when the batch holds
two or more.

Alignment. A chosen position mixes with a *real* token of its partner, never with its padding or
its [CLS]/[SEP]: the position that is the r-th eligible token of its own example (r = 0, 1, ...,
n - 1) meets the partner's eligible token number
- "wrap": r mod n' (the partner's eligible tokens, repeated as often as needed), or
- "stretch": floor(r * n' / n) (both sentences stretched to the same length),
where n' is the number of the partner's eligible tokens. A partner with no eligible token (n' = 0)
leaves the position to mix with its own token.

λ. The weight of the example's own embedding: λ e(own) + (1 - λ) e(partner's token).
- "folded": λ ~ Beta(α, α) folded to max(λ, 1 - λ) >= 0.5, so the mix stays nearest the own token;
- "beta": λ ~ Beta(α, α) as drawn, so a position can land on either token or between them;
- "fixed": λ = a given value for every position.
Drawn once per example ("example") or independently for every chosen position ("position").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from augpro_jax import config

LAMBDA_RULES = config.choices("mix_lambda")
LAMBDA_SCOPES = config.choices("mix_lambda_per")
ALIGNMENTS = config.choices("mix_partner_align")


def partner_cycle(key: jax.Array, batch: int) -> jax.Array:
  """partner [B]: a random cycle through the batch, partner[order[i]] = order[i + 1]."""
  order = jax.random.permutation(key, batch)
  return jnp.zeros((batch,), jnp.int32).at[order].set(jnp.roll(order, -1).astype(jnp.int32))


def mix_lambdas(keys: jax.Array, budget: int, *, rule: str, alpha: float, value: float,
                scope: str) -> jax.Array:
  """λ for each example's chosen positions: [B, budget] ("position") or [B, 1] ("example")."""
  if rule not in LAMBDA_RULES:
    raise ValueError(f"unknown mix lambda rule {rule!r}")
  if scope not in LAMBDA_SCOPES:
    raise ValueError(f"unknown mix lambda scope {scope!r}")
  width = budget if scope == "position" else 1
  if rule == "fixed":
    return jnp.full((keys.shape[0], width), value, jnp.float32)
  # A key of its own: the example keys also draw the positions, and λ must not depend on them.
  lam_keys = jax.vmap(lambda key: jax.random.fold_in(key, 5))(keys)
  lam = jax.vmap(lambda key: jax.random.beta(key, alpha, alpha, (width,)))(lam_keys)  # [B, width]
  return fold(lam) if rule == "folded" else lam


def fold(lam: jax.Array) -> jax.Array:
  """max(λ, 1 - λ) >= 0.5: the mix stays nearest the example's own embedding."""
  return jnp.maximum(lam, 1.0 - lam)


# MixUp on embeddings (`--aug=mixup`) mixes whole examples, with a partner and a λ of its own.


def mixup_partners(key: jax.Array, batch: int) -> jax.Array:
  """partner [B]: a random permutation of the (per-device) batch; an example may draw itself
  (AugPro-Mix draws a cycle instead: `partner_cycle`)."""
  return jax.random.permutation(key, batch)


def example_lambdas(keys: jax.Array, alpha: float, *, folded: bool = False) -> jax.Array:
  """λ ~ Beta(alpha, alpha) per example [B], drawn from the example's key itself (`fold`ed if
  `folded`)."""
  lam = jax.vmap(lambda key: jax.random.beta(key, alpha, alpha))(keys)
  return fold(lam) if folded else lam


def eligible_order(eligible: jax.Array) -> jax.Array:
  """[B, S] int32: each row's eligible positions in order, then the others (also in order)."""
  seq = eligible.shape[-1]
  position = jnp.arange(seq, dtype=jnp.int32)
  return jnp.argsort(jnp.where(eligible, position, seq + position), axis=-1).astype(jnp.int32)


def partner_tokens(input_ids: jax.Array, eligible: jax.Array, partner: jax.Array,
                   positions: jax.Array, align: str) -> jax.Array:
  """The partner's token that each of positions [B, K] mixes with: [B, K] int32 (see the module
  docstring for the rule). Positions that are not eligible get an arbitrary eligible token of the
  partner; callers only use the chosen (eligible) ones."""
  if align not in ALIGNMENTS:
    raise ValueError(f"unknown partner alignment {align!r}")
  seq = input_ids.shape[-1]
  count = jnp.sum(eligible, -1).astype(jnp.int32)  # n [B]
  rank = jnp.take_along_axis(jnp.cumsum(eligible, -1, dtype=jnp.int32) - 1, positions, -1)  # r [B, K]
  rank = jnp.maximum(rank, 0)
  partner_count = count[partner][:, None]  # n' [B, 1]
  if align == "wrap":
    index = rank % jnp.maximum(partner_count, 1)
  else:
    index = (rank * partner_count) // jnp.maximum(count[:, None], 1)
  index = jnp.clip(index, 0, jnp.maximum(partner_count - 1, 0))
  partner_positions = jnp.take_along_axis(eligible_order(eligible)[partner], index, -1)  # [B, K]
  other = jnp.take_along_axis(input_ids[partner], jnp.clip(partner_positions, 0, seq - 1), -1)
  own = jnp.take_along_axis(input_ids, positions, -1)
  return jnp.where(partner_count > 0, other, own)
