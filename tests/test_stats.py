"""The experiment statistics against values worked out by hand."""

import math

import numpy as np
import pytest

from experiments import stats


def test_paired_difference_is_the_mean_and_t_interval_of_the_differences():
  d = stats.paired_difference([0.80, 0.82, 0.84], [0.79, 0.80, 0.81])  # differences .01 .02 .03
  assert d.n == 3
  assert d.mean == pytest.approx(0.02)
  half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
  assert (d.low, d.high) == pytest.approx((0.02 - half, 0.02 + half))


def test_paired_difference_drops_missing_pairs_and_one_pair_has_no_interval():
  d = stats.paired_difference([0.5, math.nan], [0.4, 0.3])
  assert d.n == 1 and d.mean == pytest.approx(0.1)
  assert d.low == -math.inf and d.high == math.inf
  assert stats.paired_difference([], []).n == 0


def test_mcnemar_exact_counts_discordant_examples_and_gives_the_binomial_p_value():
  a = np.array([True] * 10 + [False] * 2 + [True] * 50 + [False] * 5)
  b = np.array([False] * 10 + [True] * 2 + [True] * 50 + [False] * 5)
  test = stats.mcnemar_exact(a, b)
  assert (test.a_only, test.b_only) == (10, 2)
  assert test.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12)
  assert stats.mcnemar_exact(b, a).p_value == pytest.approx(test.p_value)
  assert stats.mcnemar_exact(a, a).p_value == 1.0
  with pytest.raises(ValueError):
    stats.mcnemar_exact(a, b[:-1])


@pytest.mark.parametrize("diffs, wins, sign, want", [
    ([0.02, 0.03, 0.025], (60, 20), 1, "supported"),
    ([0.02, 0.03, 0.025], (20, 60), 1, "inconclusive"),  # seeds agree, examples do not
    ([0.02, 0.03, 0.025], (60, 20), -1, "not supported"),  # the claimed sign is the other one
    ([0.001, -0.002, 0.0005, 0.001, -0.0005], (30, 31), 1, "not supported"),  # inside ±1 point
    ([0.03, -0.02, 0.01], (40, 35), 1, "inconclusive"),
])
def test_verdict_follows_the_stated_rule(diffs, wins, sign, want):
  diff = stats.paired_difference(np.asarray(diffs) + 0.5, [0.5] * len(diffs))
  test = stats.McNemar(wins[0], wins[1], 0.001 if abs(wins[0] - wins[1]) > 10 else 0.9)
  assert stats.verdict(diff, test, expected_sign=sign) == want


def test_verdict_needs_two_seeds():
  assert stats.verdict(stats.paired_difference([0.9], [0.1]), None) == "inconclusive"


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_and_keeps_the_order():
  # sorted: .01 x4 = .04, .02 x3 = .06, .03 x2 = .06 (not below the one before), .5 x1 = .5
  assert stats.holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
  assert stats.holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])
  assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
  assert stats.holm([]) == []


def test_family_confidence_is_bonferroni_and_widens_the_interval():
  assert stats.family_confidence(10) == pytest.approx(0.995)
  narrow = stats.paired_difference([0.80, 0.82, 0.84], [0.79, 0.80, 0.81])
  wide = stats.paired_difference([0.80, 0.82, 0.84], [0.79, 0.80, 0.81], stats.family_confidence(10))
  half = 14.089046728525 * 0.01 / math.sqrt(3)  # t(1 - 0.005 / 2, 2) * sd / sqrt(n)
  assert (wide.low, wide.high) == pytest.approx((0.02 - half, 0.02 + half))
  assert wide.low < narrow.low and wide.high > narrow.high


def test_slope_is_the_t_interval_of_per_seed_least_squares_slopes():
  xs = [0.0, 0.1, 0.3, 0.5, 0.7]
  # Seed slopes 1, 2, 3 (each row is a line plus noise that sums to zero against the xs).
  rows = [[b * x + 0.5 for x in xs] for b in (1.0, 2.0, 3.0)]
  rows[0][1] += 0.01
  rows[0][3] += 0.01  # noise: ordinary least squares moves the slope a little, not to 0 or 2
  d = stats.slope(rows, xs)
  want = stats.paired_difference([float(np.polyfit(xs, r, 1)[0]) for r in rows], [0, 0, 0])
  assert d == want and d.n == 3 and d.mean == pytest.approx(2.0, abs=0.01)
  assert stats.slope(rows + [[math.nan] + rows[0][1:]], xs) == want  # a seed missing a degree
