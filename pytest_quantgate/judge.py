"""Judging: what was recorded for one (group, variant) + its rubric -> a ``Verdict``.

Pure: no model, no file, no pytest. Everything it reads was measured and recorded while the
group's cases ran (``Evidence``), so a verdict can be judged anywhere the records travel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .measure import CallTotals
from .records import CaseRecord, Verdict, case_key
from .rubric import GroupFigures, Rubric, evaluate
from .stats import compare_group, paired, wilson


@dataclass(frozen=True)
class Evidence:
    """Everything recorded about one (group, variant) that its verdict may use."""

    cases: list[CaseRecord]  # the group's cases on this variant, skipped ones included
    calls: CallTotals = field(default_factory=CallTotals)
    memory_mb: float | None = None
    load_seconds: float | None = None
    disk_mb: float | None = None
    broken: str | None = None  # preflight refused the file
    not_loaded: str | None = None  # the backend could not load it, or its worker died
    baseline_cases: dict[str, str] | None = None  # case key -> outcome in the baseline
    reference: str | None = None  # the reference variant's name, if configured
    reference_cases: dict[str, str] | None = None  # its outcomes (this run or the baseline)
    reference_source: str = "this run"
    fidelity: dict[str, Any] | None = None  # recorded after the group's last case
    fidelity_missing: str | None = None


def counts(cases: list[CaseRecord]) -> dict[str, Any]:
    """Case counts and accuracy of the cases that ran; skips are not evidence."""
    ran = [c for c in cases if c.outcome != "skipped"]
    passed = sum(c.outcome == "passed" for c in ran)
    return {"cases": len(ran), "passed_cases": passed,
            "misses": sum(c.outcome == "miss" for c in ran),
            "failures": sum(c.outcome in ("failed", "error") for c in ran),
            "accuracy": passed / len(ran) if ran else None,
            "accuracy_ci": list(wilson(passed, len(ran))) if ran else None}


def outcomes(cases: list[CaseRecord], variant: str) -> dict[str, str]:
    """``{case key: outcome}`` of the cases that ran, keyed across variants."""
    return {case_key(c.nodeid, variant): c.outcome for c in cases if c.outcome != "skipped"}


def unjudged(group: str, variant: str, rubric: Rubric, cases: list[CaseRecord], reason: str) -> Verdict:
    """A verdict whose evaluation failed: it fails, but keeps the figures of the cases that ran."""
    return Verdict(group=group, variant=variant, thresholds=rubric.thresholds(), **counts(cases),
                   reasons=[reason])


def judge(group: str, variant: str, rubric: Rubric, ev: Evidence) -> Verdict:
    if not any(c.outcome != "skipped" for c in ev.cases):  # no evidence is not a pass
        why = next((c.message for c in ev.cases if c.message), "")
        return Verdict(group=group, variant=variant, thresholds=rubric.thresholds(), no_verdict=True,
                       reasons=[f"no verdict: none of its {len(ev.cases)} case(s) was evaluated on "
                                f"{variant}, all skipped{': ' + why if why else ''}"])
    n = counts(ev.cases)
    now = outcomes(ev.cases, variant)
    base = compare_group(ev.baseline_cases, now) if ev.baseline_cases is not None else None
    ref, ref_name, ref_missing = _vs_reference(rubric, ev, now)
    fig = GroupFigures(
        cases=n["cases"], passed=n["passed_cases"], misses=n["misses"], failures=n["failures"],
        tokens_per_second=ev.calls.tokens_per_second,
        prompt_tokens_per_second=ev.calls.prompt_tokens_per_second, memory_mb=ev.memory_mb, disk_mb=ev.disk_mb or 0.0,
        load_seconds=ev.load_seconds, baseline=base, reference=ref, reference_name=ref_name,
        reference_missing=ref_missing, fidelity=ev.fidelity, fidelity_missing=ev.fidelity_missing,
    )
    reasons = evaluate(rubric, fig)
    if ev.not_loaded is not None:  # the cause, not "accuracy 0.00" from cases that never ran
        reasons = [ev.not_loaded]
    if ev.broken is not None:
        reasons.insert(0, ev.broken)
    return Verdict(
        group=group, variant=variant, thresholds=rubric.thresholds(), **n,
        tokens_per_second=fig.tokens_per_second, prompt_tokens_per_second=fig.prompt_tokens_per_second,
        memory_mb=fig.memory_mb, disk_mb=fig.disk_mb, load_seconds=fig.load_seconds,
        baseline=base.to_dict() if base else None,
        vs_reference={"reference": ref_name, **ref.to_dict()} if ref else None,
        fidelity=ev.fidelity, reasons=reasons,
    )


def _vs_reference(rubric: Rubric, ev: Evidence, now: dict[str, str]) -> tuple[Any, str | None, str | None]:
    """(paired comparison, shown reference name, why there is none) for max_drop_vs_reference."""
    if rubric.max_drop_vs_reference is None:
        return None, ev.reference, None
    if ev.reference is None:
        return None, None, "no reference: set reference: in quantgate.yaml"
    ref = ev.reference_cases or {}
    if not ref:
        return None, ev.reference, (f"reference {ev.reference} did not run (select it with "
                                    "--quant-variants) and no baseline holds its results")
    if not set(ref) & set(now):
        return None, ev.reference, f"no case in common with reference {ev.reference}"
    cmp = paired({k: o == "passed" for k, o in ref.items()}, {k: o == "passed" for k, o in now.items()},
                 gated_drop=rubric.max_drop_vs_reference)
    shown = ev.reference + ("" if ev.reference_source == "this run" else " (from the baseline)")
    return cmp, shown, None
