"""What a token-level augmentation produces: a profile of the tokens its projections return.

Counted over the *changed* tokens (eligible positions whose id differs from the original):
- partner: the token equals the partner token that position mixed with (AugPro-Mix only);
- continuation: the token is a word-piece continuation (`##...`);
- non_ascii: the token has a character outside ASCII (often a word piece of another script).
The share of changed tokens that are the original token's nearest neighbour needs a second search
over the vocabulary for every changed position, which would double the projection's cost inside
the train step; the experiment scripts compute it (`nearest_neighbour_share`), the step does not.

The step sums these counts per step (`metrics.jsonl`) and over the run (`TrainState`, then
`summary.json`); shares are count / changed, so run means weigh every changed token alike.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

# The order of the counts vector [len(COUNTS)].
COUNTS = ("changed", "mixed", "partner", "continuation", "non_ascii")


def profile_counts(original: jax.Array, augmented: jax.Array, eligible: jax.Array,
                   met: Optional[jax.Array], is_continuation: jax.Array,
                   is_non_ascii: jax.Array) -> jax.Array:
  """Counts [len(COUNTS)] f32 of one augmented copy. original, augmented, eligible [B, S];
  met [B, S] the partner token each chosen position mixed with (-1 elsewhere), or None when the
  augmentation has no partner; is_continuation, is_non_ascii [V] bool lookup tables."""
  changed = (original != augmented) & eligible  # [B, S]
  mixed = changed & (met >= 0) if met is not None else jnp.zeros_like(changed)
  partner = mixed & (augmented == met) if met is not None else mixed
  counts = [changed, mixed, partner, changed & is_continuation[augmented],
            changed & is_non_ascii[augmented]]
  return jnp.stack([jnp.sum(c, dtype=jnp.float32) for c in counts])


def shares(counts: jax.Array | list[float]) -> dict[str, Optional[float]]:
  """Shares of the changed tokens from counts [len(COUNTS)] (host values). partner_share is None
  where nothing was mixed (not AugPro-Mix), every share None where nothing changed."""
  c = dict(zip(COUNTS, (float(x) for x in counts)))
  changed = c["changed"]
  out = {"changed_tokens": int(changed)}
  for name in ("continuation", "non_ascii"):
    out[f"{name}_share"] = c[name] / changed if changed else None
  out["partner_share"] = c["partner"] / c["mixed"] if c["mixed"] else None
  return out


def step_metrics(counts: jax.Array, with_partner: bool,
                 with_token_flags: bool) -> dict[str, jax.Array]:
  """Per-step shares from this step's counts (already summed over devices), for metrics.jsonl."""
  c = dict(zip(COUNTS, counts))
  metrics = {"changed_tokens": c["changed"]}
  if with_partner:
    metrics["partner_share"] = c["partner"] / jnp.maximum(c["mixed"], 1.0)
  if with_token_flags:
    for name in ("continuation", "non_ascii"):
      metrics[f"{name}_share"] = c[name] / jnp.maximum(c["changed"], 1.0)
  return metrics


def nearest_neighbour_share(original: jax.Array, augmented: jax.Array, eligible: jax.Array,
                            nearest_of: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(changed tokens that are the original token's nearest neighbour, changed tokens) [] each.

  nearest_of [V] int32: each id's nearest other candidate (`augment.nearest_tokens` of the
  table's own rows, excluding themselves), computed once by the caller."""
  changed = (original != augmented) & eligible
  hits = changed & (augmented == nearest_of[original])
  return jnp.sum(hits, dtype=jnp.float32), jnp.sum(changed, dtype=jnp.float32)


def format_line(profile: dict[str, Optional[float]]) -> str:
  """One line: `shift 0.30 · partner 34% · nearest 38% · other 28% · ## 5% · non-ASCII 0%`
  (`· distinct 40%` too when the profile has it: distinct output ids per changed token). No `|`,
  so that the line fits in a markdown table cell."""
  def pct(key):
    value = profile.get(key)
    return "-" if value is None else f"{100 * value:.0f}%"
  parts = []
  if profile.get("measured_shift") is not None:
    parts.append(f"shift {profile['measured_shift']:.2f}")
  parts += [f"partner {pct('partner_share')}", f"nearest {pct('nearest_share')}",
            f"other {pct('other_share')}", f"## {pct('continuation_share')}",
            f"non-ASCII {pct('non_ascii_share')}"]
  if profile.get("distinct_share") is not None:
    parts.append(f"distinct {pct('distinct_share')}")
  return " · ".join(parts)
