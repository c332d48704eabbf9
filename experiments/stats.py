"""Statistics for paired experiments: differences over seeds, McNemar on examples, verdicts.

Every comparison in the protocol is paired: a seed fixes the training subset, the student's
initialisation, the batch order and the augmentation positions for both arms, so the arms of one
seed differ only in the factor studied. Two views of the same comparison:

- over seeds: the per-seed differences of the dev metric (arm A minus arm B), their mean and a
  95% t interval (`paired_difference`);
- over examples: both arms' predictions on the same dev examples, pooled over seeds, and an exact
  two-sided McNemar test on the discordant examples (`mcnemar_exact`).

`verdict` turns both into one word by the rule stated in experiments/README.md ("Verdicts"). The
claims of one study form a family: `holm` adjusts its McNemar p-values and `family_confidence` is
the Bonferroni level of its intervals, so that the chance of any false "supported" in a study stays
at ALPHA. `slope` is the trend test: a per-seed least-squares slope, and a t interval over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

# A claim's effect must clear this (in metric points x100) to be called supported; an interval
# that lies inside (-MARGIN, +MARGIN) rules out an effect of that size.
MARGIN = 1.0
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  mean: float  # mean over seeds of A - B
  low: float  # 95% t interval
  high: float
  n: int  # seeds with both arms


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> PairedDifference:
  """Mean and t interval of the per-seed differences a[i] - b[i] (NaN pairs are dropped)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  d = d[~np.isnan(d)]
  n = len(d)
  if n == 0:
    return PairedDifference(math.nan, math.nan, math.nan, 0)
  mean = float(d.mean())
  if n == 1:
    return PairedDifference(mean, -math.inf, math.inf, 1)
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top  # slow; report only
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
  return PairedDifference(mean, mean - half, mean + half, n)


@dataclasses.dataclass(frozen=True)
class McNemar:
  a_only: int  # examples arm A gets right and arm B wrong
  b_only: int  # the reverse
  p_value: float  # exact two-sided binomial test on the discordant examples


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
  """Exact McNemar test on paired per-example correctness (bool arrays of the same shape)."""
  correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if correct_a.shape != correct_b.shape:
    raise ValueError(f"paired arrays differ in shape: {correct_a.shape} vs {correct_b.shape}")
  a_only = int(np.sum(correct_a & ~correct_b))
  b_only = int(np.sum(~correct_a & correct_b))
  n = a_only + b_only
  if n == 0:
    return McNemar(0, 0, 1.0)
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  p = float(scipy_stats.binomtest(min(a_only, b_only), n, 0.5, alternative="two-sided").pvalue)
  return McNemar(a_only, b_only, min(1.0, p))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values, in the input's order (each capped at 1).

  Sorted ascending, the i-th smallest (0-based) is multiplied by m - i, and each adjusted value
  is at least the one before it: p_adj <= alpha rejects exactly the hypotheses Holm rejects.
  """
  m = len(p_values)
  order = sorted(range(m), key=lambda i: p_values[i])
  adjusted, running = [0.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))
    adjusted[i] = running
  return adjusted


def family_confidence(family_size: int, alpha: float = ALPHA) -> float:
  """Bonferroni: each of `family_size` intervals at 1 - alpha / family_size."""
  return 1.0 - alpha / max(1, family_size)


def slope(values: Sequence[Sequence[float]], xs: Sequence[float],
          confidence: float = 0.95) -> PairedDifference:
  """Trend over `xs`: each row of `values` (one seed, one value per x; NaN drops the seed) gets its
  least-squares slope, and the slopes their mean and t interval (as `paired_difference`)."""
  xs = np.asarray(xs, np.float64)
  slopes = [float(np.polyfit(xs, row, 1)[0]) for row in np.asarray(values, np.float64)
            if not np.isnan(row).any()]
  return paired_difference(slopes, [0.0] * len(slopes), confidence)


def verdict(diff: PairedDifference, test: Optional[McNemar], *, expected_sign: int = 1,
            margin: float = MARGIN, alpha: float = ALPHA, scale: float = 100.0) -> str:
  """supported / not supported / inconclusive for the claim "A - B has sign `expected_sign`".

  supported: the interval over seeds lies on the claimed side of 0, and McNemar (when there
  are per-example predictions) rejects equality at `alpha` with more examples won by the
  claimed side. For a claim of a family, `diff` is its family-wise interval and `test` carries
  the Holm-adjusted p (protocol.evaluate_family). not supported: the interval lies on the other side of 0, or inside
  (-margin, +margin) (an effect of `margin` points is ruled out). Otherwise inconclusive.
  """
  if diff.n < 2:
    return "inconclusive"
  low, high = diff.low * scale * expected_sign, diff.high * scale * expected_sign
  low, high = min(low, high), max(low, high)
  if test is not None:
    wins = test.a_only - test.b_only if expected_sign > 0 else test.b_only - test.a_only
    examples_agree = test.p_value < alpha and wins > 0
  else:
    examples_agree = True
  if low > 0 and examples_agree:
    return "supported"
  if high < 0 or (-margin < low and high < margin):
    return "not supported"
  return "inconclusive"
