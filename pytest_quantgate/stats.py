"""Small-sample statistics for pass rates: Wilson intervals and the exact McNemar test.

Eval sets are tens of cases, so normal approximations lie; everything here is exact
(binomial tails with integer arithmetic) or the Wilson score interval, which keeps its
coverage near 0 and 1 where the Wald interval collapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes in ``n`` trials (``k`` may be a mean
    times ``n``: see ``repeats.repeat_figures``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs.

    ``b``: cases the first variant passes and the second misses; ``c``: the reverse. Under
    no difference each discordant case is a fair coin, so this is a binomial test on b+c.
    """
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf_half(min(b, c), n))


def min_discordant_for_significance(alpha: float = 0.05) -> int:
    """The fewest discordant cases, all one way, that the exact test calls significant."""
    n = 1
    while mcnemar_exact(n, 0) >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class PairedComparison:
    """Variant vs. a reference (or a baseline) on the same cases."""

    cases: int  # cases both sides ran
    lost: int  # reference passed, variant missed
    gained: int  # reference missed, variant passed
    drop: float  # reference accuracy minus variant accuracy on these cases
    p_value: float
    underpowered: bool  # too few cases to ever show the gated drop as significant

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"cases": self.cases, "lost": self.lost, "gained": self.gained,
                "drop": self.drop, "p_value": self.p_value, "underpowered": self.underpowered}


def paired(ref: dict[str, bool], var: dict[str, bool], gated_drop: float | None = None,
           alpha: float = 0.05) -> PairedComparison:
    """Compare pass/miss per case on the cases both sides have."""
    common = sorted(set(ref) & set(var))
    lost = sum(ref[c] and not var[c] for c in common)
    gained = sum(var[c] and not ref[c] for c in common)
    n = len(common)
    drop = (lost - gained) / n if n else 0.0
    need = min_discordant_for_significance(alpha)
    # A drop of d on n cases is at most n*d discordant cases; below `need` no result of
    # the test could call it significant, so a gate on it would give false confidence.
    underpowered = gated_drop is not None and n * max(gated_drop, 1.0 / max(n, 1)) < need
    return PairedComparison(n, lost, gained, drop, mcnemar_exact(lost, gained), underpowered)


@dataclass
class GroupComparison:
    """This run's cases of one (group, variant) against the baseline's."""

    regressions: list[str] = field(default_factory=list)  # passed before, miss/fail now
    fixes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # not in the baseline: left out
    removed: list[str] = field(default_factory=list)
    common: int = 0
    baseline_accuracy: float | None = None  # on the common cases
    accuracy: float | None = None
    was: dict[str, str] = field(default_factory=dict)  # the baseline's outcome of each flipped case

    @property
    def drop(self) -> float:
        if self.baseline_accuracy is None or self.accuracy is None:
            return 0.0
        return self.baseline_accuracy - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "regressions": self.regressions, "fixes": self.fixes, "added": self.added,
            "removed": self.removed, "common": self.common,
            "baseline_accuracy": self.baseline_accuracy, "accuracy": self.accuracy,
            "drop": self.drop, "was": self.was,
        }


def compare_group(baseline_cases: dict[str, str], now: dict[str, str]) -> GroupComparison:
    """``{case key: outcome}`` before and now; skipped cases are not compared."""
    before = {k: o for k, o in baseline_cases.items() if o != "skipped"}
    after = {k: o for k, o in now.items() if o != "skipped"}
    common = sorted(set(before) & set(after))
    cmp = GroupComparison(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        common=len(common),
    )
    for k in common:
        was, now_ok = before[k] == "passed", after[k] == "passed"
        if was and not now_ok:
            cmp.regressions.append(k)
        elif now_ok and not was:
            cmp.fixes.append(k)
        if was != now_ok:
            cmp.was[k] = before[k]
    if common:
        cmp.baseline_accuracy = sum(before[k] == "passed" for k in common) / len(common)
        cmp.accuracy = sum(after[k] == "passed" for k in common) / len(common)
    return cmp
