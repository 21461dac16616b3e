"""Repeats: a sampled case run R times (seeds seed, seed+1, ...) and judged once. Pure.

Each repeat is its own test item (``test_x[Q4_K_M-case-rep3]``), so a test asserts once per
repeat without a loop; ``aggregate`` folds the R records of a case into one, whose outcome is
what accuracy, baselines and the reference comparison then count. ``repeat_figures`` gives
the measures sampled evaluations report: the mean pass rate with an interval, pass@k (at least
one of k samples passes) and pass^k (all k pass), estimated without bias from R samples.
"""

from __future__ import annotations

import math
from typing import Any

from .records import CaseRecord
from .stats import wilson

REPEAT_FIXTURE = "quant_repeat"  # the fixture (and parameter) that parametrizes tests over repeats


def repeat_id(r: int) -> str:
    return f"rep{r}"


def without_repeat(nodeid: str, repeat: int | None) -> str:
    """``test_x[Q4_K_M-capital-rep3]`` -> ``test_x[Q4_K_M-capital]``: the repeat is always the
    last parameter (it is parametrized after every other one). Unchanged without a repeat."""
    if repeat is None:
        return nodeid
    tag = repeat_id(repeat)
    at = nodeid.rfind("@")
    if at > nodeid.rfind("]"):  # an xdist loadgroup suffix follows the brackets: "...]@Q4_K_M"
        return without_repeat(nodeid[:at], repeat) + nodeid[at:]
    if nodeid.endswith(f"-{tag}]"):
        return nodeid[: -len(tag) - 2] + "]"
    if nodeid.endswith(f"[{tag}]"):
        return nodeid[: -len(tag) - 2]
    return nodeid


def case_outcome(outcomes: list[str], pass_rate: float) -> str:
    """A case's outcome from its repeats' outcomes: an error or failure (not a wrong answer)
    in any repeat is that; otherwise it passes when enough of the repeats that ran passed."""
    ran = [o for o in outcomes if o != "skipped"]
    if not ran:
        return "skipped"
    for bad in ("error", "failed"):
        if bad in ran:
            return bad
    return "passed" if ran.count("passed") >= pass_rate * len(ran) - 1e-9 else "miss"


def aggregate(cases: list[CaseRecord]) -> list[CaseRecord]:
    """One record per case: records without a repeat pass through; the repeats of a case
    become one record (in the position of its first repeat) with every repeat's outcome and
    calls. Each repeat's record carries the share of repeats its case needs (recorded where
    the item ran: an xdist controller has no rubric of its own to ask)."""
    out: list[CaseRecord] = []
    folded: dict[tuple[str, str], list[CaseRecord]] = {}
    for c in cases:
        if c.repeat is None:
            out.append(c)
            continue
        key = (without_repeat(c.nodeid, c.repeat), c.variant)
        if key not in folded:
            folded[key] = []
            out.append(c)  # a placeholder, replaced below
        folded[key].append(c)
    for i, c in enumerate(out):
        if c.repeat is None:
            continue
        nodeid = without_repeat(c.nodeid, c.repeat)
        reps = sorted(folded[(nodeid, c.variant)], key=lambda x: x.repeat or 0)
        outcomes = [r.outcome for r in reps]
        outcome = case_outcome(outcomes, reps[0].pass_rate)
        message = _message(reps, outcome)
        if len(reps) < reps[0].n_repeats:  # -k, --deselect, --lf: part of its repeats ran
            outcome = "skipped"  # not evidence: a case is never judged on part of its repeats
            message = (f"only {len(reps)} of {reps[0].n_repeats} repeats ran in this run; "
                       "a case is judged on all of them")
        out[i] = CaseRecord(nodeid, c.variant, c.group, outcome, message,
                            calls=tuple(call for r in reps for call in r.calls),
                            repeats=tuple(outcomes))
    return out


def _message(reps: list[CaseRecord], outcome: str) -> str:
    ran = [r for r in reps if r.outcome != "skipped"]
    passed = sum(r.outcome == "passed" for r in ran)
    first = next((r for r in ran if r.outcome == outcome), None) if outcome != "passed" else None
    if not ran:
        return next((r.message for r in reps if r.message), "")
    head = f"{passed}/{len(ran)} repeats passed"
    if first is None:
        first = next((r for r in ran if r.outcome != "passed"), None)
    return head + (f"; {repeat_id(first.repeat or 0)}: {first.message}" if first is not None and first.message else "")


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples passes), unbiased from c passes in n (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """P(all k samples pass), unbiased from c passes in n (tau-bench's pass^k)."""
    return math.comb(c, k) / math.comb(n, k)


def ks(repeats: int) -> list[int]:
    """The k reported: 1, powers of two below R, and R."""
    out, k = [], 1
    while k < repeats:
        out.append(k)
        k *= 2
    return [*out, repeats]


def repeat_figures(cases: list[CaseRecord], repeats: int, pass_rate: float) -> dict[str, Any] | None:
    """The group's sampled-evaluation figures over its aggregated cases (None without repeats).

    The mean pass rate's interval is Wilson's with one trial per case: repeats of one case are
    not independent evidence about the model, cases are, so the interval is no narrower than
    the number of cases allows (conservative: a case's rate varies less than a coin).
    pass@k and pass^k use only cases with all R repeats run, so every case has the same n.
    """
    rated = [c for c in cases if c.repeats and c.outcome != "skipped"]
    if repeats <= 1 or not rated:
        return None
    rates = []
    full: list[tuple[int, int]] = []
    for c in rated:
        ran = [o for o in c.repeats if o != "skipped"]
        rates.append(ran.count("passed") / len(ran))
        if len(ran) == repeats:
            full.append((len(ran), ran.count("passed")))
    mean = sum(rates) / len(rates)
    lo, hi = wilson(mean * len(rates), len(rates))
    figures: dict[str, Any] = {
        "repeats": repeats, "case_pass_rate": pass_rate, "cases": len(rated),
        "mean_pass_rate": mean, "pass_rate_ci": [lo, hi],
        "flaky_cases": sum(0 < r < 1 for r in rates),  # passed some repeats, missed others
    }
    if full:
        figures["pass_at_k"] = {str(k): sum(pass_at_k(n, c, k) for n, c in full) / len(full) for k in ks(repeats)}
        figures["pass_hat_k"] = {str(k): sum(pass_hat_k(n, c, k) for n, c in full) / len(full) for k in ks(repeats)}
    return figures
