"""The statistics behind every comparison the report states: t-based confidence intervals, paired or Welch
t-tests over seeds, Holm's correction within a family of claims, and how many seeds a borderline difference
would need.

Seeds are the unit of replication: a seed fixes the examples, the augmentations, the initialisation and the
probe's split, so two groups that share seeds are compared pair by pair (a paired t-test over the shared
seeds) and groups that share fewer than two by Welch's t-test. A single run is never ranked as if certain:
it is compared only where it is taken to vary as the other group's seeds do (`one_seed_varies_alike`: the same
method trained another way), by the t-test of one new observation against a sample. The numbers come from
scipy.stats; only Holm's step-down adjustment, four lines, is written here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from scipy import stats

ALPHA = 0.05  # two-sided level of every test and 1 - the confidence of every interval
POWER = 0.8  # the chance a seed count must give of detecting a difference as large as the one measured
MOST_SEEDS = 1000  # `seeds_needed` answers "more than" beyond this
ROUNDING = 1e-9  # a spread below this is float rounding of equal scores (probe scores carry 4 decimals): none


def mean_ci(values: Iterable[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95% confidence interval (t with n - 1 degrees of freedom); None with
    one value, which has no spread to build one from."""
    values = list(values)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, float(stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b), its 95% confidence interval and the test's p-value (None where untested); `p_holm` is
    the p-value after Holm's correction within the comparison's family (`holm`), `seeds` how the test paired them."""

    diff: float
    low: float | None
    high: float | None
    p: float | None
    test: str  # "paired, 3 seeds", "Welch, 3 vs 2 seeds", "1 run vs 3 seeds", "one seed: untested"
    spread: float | None = None  # the standard deviation the test divides by (of the paired differences, or pooled)
    per_group: int | None = None  # seeds per group behind the test (the smaller group for Welch)
    p_holm: float | None = None
    family_tests: int = 1  # how many tested comparisons its Holm correction spans

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def finding(self) -> bool:
        """Significant at ALPHA after the family's correction (before it, when the comparison stands alone)."""
        p = self.p if self.p_holm is None else self.p_holm
        return p is not None and p < ALPHA

    def __str__(self) -> str:
        if self.p is None or self.low is None or self.high is None:  # untested (all three are None together)
            return f"{fmt_diff(self.diff)} ({self.test})"
        adjusted = "" if self.p_holm is None else f", Holm p {fmt_p(self.p_holm)}"
        return (
            f"{fmt_diff(self.diff)} [{fmt_diff(self.low)}, {fmt_diff(self.high)}], p {fmt_p(self.p)}{adjusted} "
            f"({self.test})" + (" **finding**" if self.finding else "")
        )


def fmt_p(p: float) -> str:
    """A p-value after its name: "= 0.034" or "< 0.001"."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def fmt_diff(diff: float) -> str:
    """A signed difference to 4 decimals; a difference that rounds to 0 is +0.0000, never -0.0000."""
    text = f"{diff:+.4f}"
    return "+0.0000" if text == "-0.0000" else text


def compare(a: Mapping[int, float], b: Mapping[int, float], *, one_seed_varies_alike: bool = False) -> Comparison:
    """mean(a) - mean(b) for two groups of results keyed by seed: paired over the seeds they share when they
    share two or more (scipy's `ttest_rel`), else Welch's (`ttest_ind`, unequal variances) when each has two or
    more, else (`one_seed_varies_alike`) one run against the other group's seeds, else untested."""
    diff = statistics.fmean(a.values()) - statistics.fmean(b.values())
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        x, y = [a[seed] for seed in shared], [b[seed] for seed in shared]
        spread = statistics.stdev(u - v for u, v in zip(x, y, strict=True))
        test = f"paired, {len(shared)} seeds"
        if spread < ROUNDING:
            return _identical(diff, statistics.fmean(x) - statistics.fmean(y), test, spread, len(shared))
        return _from_scipy(diff, stats.ttest_rel(x, y), test, spread, len(shared))
    if len(a) >= 2 and len(b) >= 2:
        x, y = list(a.values()), list(b.values())
        spread = math.sqrt((statistics.variance(x) + statistics.variance(y)) / 2)
        test = f"Welch, {len(x)} vs {len(y)} seeds"
        if spread < ROUNDING:
            return _identical(diff, diff, test, spread, min(len(x), len(y)))
        return _from_scipy(diff, stats.ttest_ind(x, y, equal_var=False), test, spread, min(len(x), len(y)))
    single, many = (a, b) if len(a) == 1 else (b, a)
    if one_seed_varies_alike and len(single) == 1 and len(many) >= 2:
        # one new observation against a sample: (x - mean) / (s * sqrt(1 + 1/n)) is t with n - 1 degrees of freedom
        spread, n = statistics.stdev(many.values()), len(many)
        if spread < ROUNDING:
            return _identical(diff, diff, f"1 run vs {n} seeds", spread, None)
        error, freedom = spread * math.sqrt(1 + 1 / n), n - 1
        half = stats.t.ppf(1 - ALPHA / 2, freedom) * error
        p = 2 * stats.t.sf(abs(diff) / error, freedom)
        return Comparison(diff, diff - half, diff + half, float(p), f"1 run vs {n} seeds", spread, None)
    return Comparison(diff, None, None, None, "one seed: untested")


def _from_scipy(diff: float, result, test: str, spread: float, per_group: int | None) -> Comparison:
    interval = result.confidence_interval(1 - ALPHA)
    return Comparison(diff, float(interval.low), float(interval.high), float(result.pvalue), test, spread, per_group)


def _identical(diff: float, estimate: float, test: str, spread: float, per_group: int | None) -> Comparison:
    """Runs without any spread (a t statistic of 0/0 or x/0): p = 1 for no difference and 0 for any, the test's
    limit."""
    return Comparison(diff, estimate, estimate, 1.0 if estimate == 0 else 0.0, test, spread, per_group)


def holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with `p_holm` set: Holm's step-down adjustment over the tested ones of one family (the
    claims of one table or one list of findings), which keeps the chance of any false finding in it below ALPHA."""
    tested = sorted((c.p, i) for i, c in enumerate(comparisons) if c.p is not None)  # c.tested
    adjusted, running = {}, 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return [
        replace(c, p_holm=adjusted[i], family_tests=len(tested)) if i in adjusted else c
        for i, c in enumerate(comparisons)
    ]


def seeds_needed(comparison: Comparison) -> int | None:
    """How many seeds (per group, paired as the comparison was) would detect a difference as large as the one
    measured, with the spread measured, with POWER chance at ALPHA / m for one of m tested comparisons of a
    Holm-corrected family (Holm's strictest level: enough seeds for it to pass whatever the others score); None
    where no spread was measured or the difference is 0; MOST_SEEDS + 1 for "more than MOST_SEEDS"."""
    if comparison.spread is None or comparison.per_group is None or comparison.diff == 0:
        return None
    if comparison.spread < ROUNDING:
        return 2
    effect = abs(comparison.diff) / comparison.spread
    paired = comparison.test.startswith("paired")
    for n in range(2, MOST_SEEDS + 1):
        freedom = n - 1 if paired else 2 * (n - 1)
        shift = effect * math.sqrt(n if paired else n / 2)
        critical = stats.t.ppf(1 - ALPHA / comparison.family_tests / 2, freedom)
        # P(T > c) + P(T < -c) for T ~ nct(shift); the second as P(-T > c), -T ~ nct(-shift): scipy's cdf far in
        # the lower tail returns nan (scipy 1.17, 1 degree of freedom, shift 21)
        if stats.nct.sf(critical, freedom, shift) + stats.nct.sf(critical, freedom, -shift) >= POWER:
            return n
    return MOST_SEEDS + 1
