"""Statistics over seeds (pure functions): mean, sample std, 95% Student-t intervals, and the paired
difference of a variant from the baseline over the seeds both finished.

A value that is missing or NaN (a failed cell) is left out before anything is computed, and a
statistic that needs n >= 2 (std, interval) is ``None`` below that: nothing reported is computed
from NaN or from one seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

# t_{0.975, df} for df = 1..30: two-sided 95% quantiles of Student's t distribution, as printed in
# the NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2 ("Critical values of the
# Student's t distribution"), to 4 decimals (tests/test_ablation.py checks them against scipy).
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t975(df: int) -> float:
    """Student t's 0.975 quantile (a two-sided 95% interval) with ``df`` >= 1 degrees of freedom.

    Past the table (df > 30): the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5,
    four terms), within 1e-7 of the exact value there."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(t / df ** (i + 1) for i, t in enumerate(terms))


def finite_values(values: Iterable[Optional[float]]) -> List[float]:
    """``values`` without None and NaN / inf."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


@dataclass(frozen=True)
class Summary:
    """Mean over n values; ``std`` (sample, n-1) and the 95% t-interval of the mean are None if n < 2."""

    n: int
    mean: Optional[float]
    std: Optional[float]
    low: Optional[float]
    high: Optional[float]


def summarize(values: Iterable[Optional[float]]) -> Summary:
    """:class:`Summary` of the finite ``values``: mean ± t975(n-1) * std / sqrt(n)."""
    xs = finite_values(values)
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = sum(xs) / n
    if n < 2:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


ABOVE, BELOW, CONTAINS = "above 0", "below 0", "contains 0"


@dataclass(frozen=True)
class Paired:
    """The variant minus the baseline, seed by seed, over ``seeds`` (both finished, finite)."""

    seeds: Sequence[int]
    diff: Summary

    @property
    def verdict(self) -> str:
        """Where the 95% interval of the mean difference lies: above / below 0, contains 0, or why
        there is no interval."""
        d = self.diff
        if d.low is None or d.high is None:
            return f"n={d.n}, no interval"
        if d.low > 0:
            return ABOVE
        if d.high < 0:
            return BELOW
        return CONTAINS


def paired_difference(variant: Dict[int, Optional[float]], baseline: Dict[int, Optional[float]]) -> Paired:
    """``variant[seed] - baseline[seed]`` over the seeds where both are finite (``{seed: value}``)."""
    both = tuple(s for s in sorted(variant) if s in baseline and len(finite_values([variant[s], baseline[s]])) == 2)
    return Paired(both, summarize(variant[s] - baseline[s] for s in both))  # type: ignore[operator]
