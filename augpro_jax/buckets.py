"""Length buckets: a few static sequence lengths, so that batches carry little padding.

Every batch used to be padded to `--max_seq_len`; SST-2 sentences are 13 MiniLM tokens on average,
so most of what the step computed was padding. Accelerators want static shapes, so instead of a
new shape per batch a run uses a few bucket lengths (`--length_buckets`): each global batch is made
of examples from one bucket and padded to that bucket's length, and the jitted step compiles once
per bucket.

Everything here is a pure function of the example lengths, the seed and the step:
- `choose_buckets`: the lengths (multiples of 8) that minimise padding on a length histogram;
- `epoch_batches`: an epoch as global batches, each from one bucket, in random bucket order;
- `eval_plan`: every example exactly once, batched within its bucket, in original order inside it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from augpro_jax.errors import UserError

Buckets = tuple[int, ...]  # increasing sequence lengths; the last holds the longest example

MULTIPLE = 8  # bucket lengths are multiples of this (the top one may be capped at max_seq_len)


def sequence_lengths(attention_mask: np.ndarray) -> np.ndarray:
  """[N] int: one past the last real token of each row of a right-padded mask [N, S].

  Slicing a row to this length (or more) drops only padding, even if the mask had holes.
  """
  mask = np.asarray(attention_mask) > 0
  positions = np.arange(1, mask.shape[1] + 1)
  return np.max(np.where(mask, positions, 0), axis=1).astype(np.int64) if mask.size else \
      np.zeros((mask.shape[0],), np.int64)


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def choose_buckets(lengths: np.ndarray, max_buckets: int, max_seq_len: int,
                   min_examples: int = 1, compile_tokens: float = 0.0,
                   multiple: int = MULTIPLE) -> Buckets:
  """Up to `max_buckets` lengths, multiples of `multiple`, that minimise the padded tokens
  sum_i bucket(length_i) when each example goes to the shortest bucket that holds it, plus
  `compile_tokens` per bucket: what one more compile of the step costs, in padded tokens of the
  whole run (so a short run gets fewer buckets than a long one).

  The last bucket is the longest example rounded up to `multiple`, capped at `max_seq_len`. Every
  bucket holds at least `min_examples` examples (give the global batch: a bucket that cannot fill
  one batch never forms a batch of its own, yet costs a compile); one bucket is always allowed.
  An exact dynamic programme over the candidate lengths (multiples of `multiple` up to the last):
  best[k][j] = fewest padded tokens covering every length <= candidate j with k buckets, the last
  at j. Fewer buckets are kept when more would not lower the cost.
  """
  lengths = np.asarray(lengths, np.int64)
  if lengths.size == 0:
    return (min(max_seq_len, multiple),)
  if lengths.max() > max_seq_len:
    raise ValueError(f"an example of {lengths.max()} tokens is longer than max_seq_len={max_seq_len}")
  top = min(max_seq_len, _round_up(int(lengths.max()), multiple))
  candidates = [c for c in range(multiple, top, multiple)] + [top]  # increasing, ends at top
  # counts[j]: examples whose shortest candidate is candidates[j].
  counts = np.bincount(np.searchsorted(candidates, lengths, side="left"), minlength=len(candidates))
  upto = np.cumsum(counts).astype(np.float64)  # upto[j]: examples with candidate <= j
  size = np.asarray(candidates, np.float64)
  num = len(candidates)
  best = np.full((max_buckets + 1, num), np.inf)
  parent = np.full((max_buckets + 1, num), -1, np.int64)
  best[1] = np.where(upto >= min_examples, size * upto, np.inf)  # one bucket: everything <= j
  for k in range(2, max_buckets + 1):
    for j in range(1, num):
      # The previous bucket at i < j; this one, at candidate j, takes the examples in (i, j].
      members = upto[j] - upto[:j]
      costs = np.where(members >= min_examples, best[k - 1, :j] + size[j] * members, np.inf)
      i = int(np.argmin(costs))
      best[k, j], parent[k, j] = costs[i], i
  last = num - 1
  cost = best[:, last] + compile_tokens * np.arange(max_buckets + 1)
  k = 1
  for option in range(2, max_buckets + 1):
    if cost[option] < cost[k]:
      k = option
  if not np.isfinite(best[k, last]):  # fewer examples than min_examples: one bucket
    return (top,)
  chosen, j = [], last
  while k >= 1:
    chosen.append(candidates[j])
    j, k = int(parent[k, j]), k - 1
  return tuple(sorted(chosen))


def parse(spec: str) -> Optional[tuple[int, ...]]:
  """`--length_buckets`: 'auto' -> None; 'none' -> (); '16,32,64' -> (16, 32, 64).

  Raises UserError (one line) for anything else.
  """
  text = spec.strip().lower()
  if text == "auto":
    return None
  if text == "none":
    return ()
  try:
    values = [int(part) for part in text.split(",") if part.strip()]
  except ValueError:
    raise UserError(f"--length_buckets must be auto, none or increasing lengths like 16,32,64; "
                    f"got {spec!r}") from None
  if not values or any(v < 1 for v in values) or values != sorted(set(values)):
    raise UserError(f"--length_buckets must be auto, none or increasing positive lengths like "
                    f"16,32,64; got {spec!r}")
  return tuple(values)


def resolve(spec: str, lengths: np.ndarray, max_seq_len: int, max_buckets: int,
            min_examples: int = 1, compile_tokens: float = 0.0) -> Buckets:
  """The run's buckets from `--length_buckets` and the training split's lengths [N].

  auto: `choose_buckets` (each bucket at least `min_examples`, the global batch, examples; each
  costing `compile_tokens` padded tokens per pass over the split, see `compile_cost_tokens`).
  'none' is one bucket of `max_seq_len` (fixed padding). Listed lengths are kept as given, plus
  `max_seq_len` when some example is longer than the longest listed one.
  """
  parsed = parse(spec)
  if parsed is None:
    return choose_buckets(lengths, max_buckets, max_seq_len, min_examples, compile_tokens)
  if not parsed:
    return (max_seq_len,)
  if parsed[-1] > max_seq_len:
    raise UserError(f"--length_buckets={spec}: {parsed[-1]} is longer than "
                    f"--max_seq_len={max_seq_len}")
  longest = int(np.max(lengths)) if len(lengths) else 0
  return parsed + ((max_seq_len,) if longest > parsed[-1] else ())


def compile_cost_tokens(compile_steps: float, global_batch: int, lengths: np.ndarray,
                        max_seq_len: int, epochs: float) -> float:
  """One compile, as padded tokens per pass over the split: `compile_steps` steps of the longest
  bucket, spread over the run's `epochs` passes (the DP counts the padded tokens of one pass)."""
  longest = int(np.max(lengths)) if len(lengths) else MULTIPLE
  top = min(max_seq_len, _round_up(longest, MULTIPLE))
  return compile_steps * global_batch * top / max(epochs, 1e-9)


def extend_for(buckets: Buckets, lengths: np.ndarray, max_seq_len: int) -> Buckets:
  """`buckets` plus one more for examples longer than the last (dev text longer than any
  training text): the longest rounded up to a multiple of 8, capped at `max_seq_len`."""
  longest = int(np.max(lengths)) if len(lengths) else 0
  if longest <= buckets[-1]:
    return buckets
  return buckets + (min(max_seq_len, _round_up(longest, MULTIPLE)),)


def assign(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """[N] index of the shortest bucket that holds each example."""
  index = np.searchsorted(np.asarray(buckets), np.asarray(lengths), side="left")
  if len(index) and index.max() >= len(buckets):
    raise ValueError(f"an example of {int(np.max(lengths))} tokens is longer than every bucket "
                     f"{tuple(buckets)}")
  return index


def utilisation(lengths: np.ndarray, buckets: Sequence[int]) -> float:
  """Real tokens / tokens processed when each example is padded to its shortest bucket."""
  lengths = np.asarray(lengths, np.int64)
  padded = np.asarray(buckets)[assign(lengths, buckets)]
  return float(lengths.sum() / max(padded.sum(), 1))


# ----------------------------------------------------------------------------------------------
# Training: an epoch as global batches, each from one bucket.
# ----------------------------------------------------------------------------------------------


def epoch_batches(bucket_of: np.ndarray, num_buckets: int, global_batch: int, seed: int,
                  epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows [steps, global_batch], bucket index [steps]) of one epoch; steps = N // global_batch.

  The epoch's permutation is drawn as in fixed padding. Walking the buckets from the shortest,
  each takes full batches of its members in permutation order; the fewer than `global_batch`
  members left over move up to the next bucket (padded a little more), ahead of its own members.
  The top bucket's leftover, N mod global_batch examples, is dropped as fixed padding drops the last
  partial batch, so an epoch has as many steps as before. The batches are then shuffled, so the
  buckets come in random order (no curriculum by length). With one bucket nothing is shuffled and
  the batches are exactly fixed padding's.
  """
  n = len(bucket_of)
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(n)
  rows, which = [], []
  carried = np.zeros((0,), order.dtype)
  for b in range(num_buckets):
    members = np.concatenate([carried, order[bucket_of[order] == b]])
    full = len(members) // global_batch * global_batch
    if full:
      rows.append(members[:full].reshape(-1, global_batch))
      which.append(np.full(full // global_batch, b, np.int64))
    carried = members[full:]
  if not rows:
    return np.zeros((0, global_batch), np.int64), np.zeros((0,), np.int64)
  rows, which = np.concatenate(rows), np.concatenate(which)
  if num_buckets > 1:
    shuffle = rng.permutation(len(which))
    rows, which = rows[shuffle], which[shuffle]
  return rows, which


def eval_plan(bucket_of: np.ndarray, num_buckets: int, global_batch: int
              ) -> list[tuple[int, np.ndarray]]:
  """[(bucket index, example index [global_batch], -1 for padding rows)]: every example exactly
  once, in its own bucket, in original order within it; each bucket's last batch is padded."""
  plan = []
  for b in range(num_buckets):
    members = np.flatnonzero(bucket_of == b)
    for start in range(0, len(members), global_batch):
      index = np.full(global_batch, -1, np.int64)
      chunk = members[start:start + global_batch]
      index[:len(chunk)] = chunk
      plan.append((b, index))
  return plan
