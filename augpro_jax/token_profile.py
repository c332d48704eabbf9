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

import json
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

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


# ----------------------------------------------------------------------------------------------
# The vocabulary's flags (host side).
# ----------------------------------------------------------------------------------------------


def _byte_level_chars() -> dict[str, int]:
  """The byte-level BPE alphabet: the character that stands for each byte -> the byte."""
  kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
  moved = [b for b in range(256) if b not in kept]  # control bytes, space...: 256, 257, ...
  return {**{chr(b): b for b in kept}, **{chr(256 + i): b for i, b in enumerate(moved)}}


def _word_marker(tokenizer) -> tuple[str, bool]:
  """(marker, marks_start): WordPiece marks a continuation (`##`), byte-level BPE a word start
  (`Ġ`, the space byte), SentencePiece/Metaspace a word start (`▁`)."""
  if not hasattr(tokenizer, "to_str"):  # a bare vocabulary: WordPiece's marker
    return "##", False
  spec = json.loads(tokenizer.to_str())
  model = spec.get("model") or {}
  if model.get("type", "WordPiece") == "WordPiece":
    return model.get("continuing_subword_prefix") or "##", False
  byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
  return ("\u0120" if byte_level else "\u2581"), True


def vocabulary_flags(tokenizer, vocab_size: int, specials: set[int]
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(is_continuation [V], is_non_ascii [V]) bool, for the augmentations' profile: tokens that continue a word (read with the tokenizer's own marker, see
  `_word_marker`) and tokens whose text has a character outside ASCII (byte-level tokens are
  read as the bytes they stand for)."""
  is_continuation = np.zeros(vocab_size, bool)
  is_non_ascii = np.zeros(vocab_size, bool)
  marker, marks_start = _word_marker(tokenizer)
  byte_chars = _byte_level_chars() if marker == "\u0120" else None
  for token, index in tokenizer.get_vocab().items():
    if index < vocab_size:
      starts = token.startswith(marker)
      is_continuation[index] = (not starts and index not in specials) if marks_start else starts
      if byte_chars is not None and index not in specials:
        is_non_ascii[index] = any(byte_chars.get(c, 255) >= 128 for c in token)
      else:
        is_non_ascii[index] = not (token.replace(marker, " ") if marks_start else token).isascii()
  return is_continuation, is_non_ascii
