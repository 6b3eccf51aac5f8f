"""The report's statistics, checked against numbers computed by hand."""

from __future__ import annotations

import math

import pytest

from contrastlab.study.stats import Comparison, compare, holm, mean_ci, seeds_needed


def test_the_confidence_interval_of_a_mean_is_t_based():
    # mean 0.6, std 0.1, n 3: t(0.975, 2) = 4.302653 -> half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    mean, half = mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(0.248414, abs=1e-6)
    assert mean_ci([0.7]) == (0.7, None)  # one seed has no interval


def test_groups_that_share_seeds_are_compared_pair_by_pair():
    # differences 0.01, 0.02, 0.03: mean 0.02, std 0.01, standard error 0.0057735, t = 3.4641 with 2 degrees of
    # freedom; the t(2) tail is 0.5 * (1 - t / sqrt(t^2 + 2)) = 0.037090, so p = 0.074180; the CI is
    # 0.02 -+ 4.302653 * 0.0057735 = [-0.004841, 0.044841]
    result = compare({0: 0.51, 1: 0.52, 2: 0.53}, {0: 0.50, 1: 0.50, 2: 0.50})
    assert result.test == "paired, 3 seeds"
    assert result.diff == pytest.approx(0.02)
    assert result.p == pytest.approx(0.074180, abs=1e-6)
    assert (result.low, result.high) == (pytest.approx(-0.004841, abs=1e-6), pytest.approx(0.044841, abs=1e-6))
    assert not result.finding


def test_the_old_two_standard_error_rule_would_have_called_that_a_finding():
    # The case above under the rule the report used before: |0.02| > 2 x sqrt(0.01^2 / 3 + 0) = 0.0115, "larger than
    # the seed spread"; with three seeds the t-test's cutoff is 4.30 standard errors, not 2.
    a, b = [0.51, 0.52, 0.53], [0.50, 0.50, 0.50]
    two_se = 2 * math.sqrt(0.01**2 / 3)
    assert abs(0.02) > two_se
    assert not compare(dict(enumerate(a)), dict(enumerate(b))).finding


def test_groups_without_shared_seeds_get_welchs_test():
    # a = [1, 3]: mean 2, variance 2; b = [4, 6, 8]: mean 6, variance 4. Squared standard errors 1 and 4/3, so the
    # standard error is sqrt(7/3) = 1.527525 and t = -4 / 1.527525 = -2.618615; Welch-Satterthwaite degrees of
    # freedom (7/3)^2 / (1^2 / 1 + (4/3)^2 / 2) = 2.882353
    from scipy import stats

    result = compare({0: 1.0, 1: 3.0}, {2: 4.0, 3: 6.0, 4: 8.0})
    assert result.test == "Welch, 2 vs 3 seeds"
    assert result.diff == pytest.approx(-4.0)
    assert result.p == pytest.approx(2 * stats.t.sf(2.618615, 2.882353), rel=1e-5)
    half = stats.t.ppf(0.975, 2.882353) * 1.527525
    assert (result.low, result.high) == (pytest.approx(-4 - half, rel=1e-5), pytest.approx(-4 + half, rel=1e-5))


def test_one_seed_is_untested_unless_it_is_taken_to_vary_as_the_other_groups_seeds():
    assert not compare({0: 0.9}, {0: 0.4}).tested
    assert not compare({0: 0.9}, {0: 0.4, 1: 0.5}).tested
    # 0.82 against [0.80, 0.81]: std 0.0070711, error 0.0070711 * sqrt(1 + 1/2) = 0.0086603, t = 0.015 / 0.0086603
    # = sqrt(3) with 1 degree of freedom: p = 1 - (2 / pi) atan(sqrt(3)) = 1/3
    result = compare({5: 0.82}, {0: 0.80, 1: 0.81}, one_seed_varies_alike=True)
    assert result.test == "1 run vs 2 seeds" and result.p == pytest.approx(1 / 3)
    assert compare({0: 0.80, 1: 0.81}, {5: 0.82}, one_seed_varies_alike=True).p == pytest.approx(1 / 3)


def test_identical_runs_are_the_tests_limit():
    assert compare({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).p == 1.0
    same_gap = compare({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})
    assert same_gap.p == 0.0 and same_gap.low == same_gap.high == pytest.approx(0.1)


def test_holm_multiplies_the_smallest_p_by_the_family_size_and_steps_down():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06; untested left alone
    family = [Comparison(0.1, 0, 0.2, p, "paired, 3 seeds") for p in (0.01, 0.04, 0.03)]
    family.append(Comparison(0.1, None, None, None, "one seed: untested"))
    adjusted = holm(family)
    assert [c.p_holm for c in adjusted] == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert [c.finding for c in adjusted] == [True, False, False, False]


def test_seeds_needed_grows_as_the_difference_shrinks_against_the_spread():
    # a paired difference of one standard deviation needs 10 pairs for 80% power at 5% (the textbook value)
    one_sd = Comparison(0.01, 0, 0, 0.5, "paired, 3 seeds", spread=0.01, per_group=3)
    assert seeds_needed(one_sd) == 10
    half_sd = Comparison(0.005, 0, 0, 0.5, "paired, 3 seeds", spread=0.01, per_group=3)
    assert seeds_needed(half_sd) > 10
    assert seeds_needed(Comparison(0.01, None, None, None, "one seed: untested")) is None


def test_seeds_needed_plans_for_the_holm_level_of_its_family():
    # one of 3 tested comparisons: 80% power at 0.05 / 3 (the normal approximation gives (z_0.99167 + z_0.8)^2
    # = (2.394 + 0.842)^2 = 10.5 pairs; the t distribution's heavier tails make it 14), not at 0.05 (10)
    one_sd = Comparison(0.01, 0, 0, 0.5, "paired, 3 seeds", spread=0.01, per_group=3)
    family = holm([one_sd, one_sd, one_sd, Comparison(0.1, None, None, None, "one seed: untested")])
    assert [c.family_tests for c in family] == [3, 3, 3, 1]
    assert seeds_needed(family[0]) == 14
