"""Judging: what was recorded for one (group, variant) + its rubric -> a ``Verdict``.

Pure: no model, no file, no pytest. Everything it reads was measured and recorded while the
group's cases ran (``Evidence``), so a verdict can be judged anywhere the records travel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .constants import DECIDED_PREFIX
from .measure import CallTotals, Probe, Spread
from .records import CaseRecord, Verdict, case_key, case_label, no_evidence
from .repeats import repeat_figures
from .rubric import ACCURACY_BOUNDS, RUBRIC_KEYS, GroupFigures, Rubric, accuracy_holds, evaluate
from .stats import GroupComparison, compare_group, paired, wilson


@dataclass(frozen=True)
class Evidence:
    """Everything recorded about one (group, variant) that its verdict may use."""

    cases: list[CaseRecord]  # the group's cases on this variant, skipped ones included; a
    # case run over repeats is one record (repeats.aggregate)
    calls: CallTotals = field(default_factory=CallTotals)
    memory_mb: float | None = None
    load_seconds: float | None = None
    disk_mb: float | None = None
    broken: str | None = None  # preflight refused the file
    not_loaded: str | None = None  # the backend could not load it, or its worker died
    baseline_cases: dict[str, str] | None = None  # case key -> outcome in the baseline
    baseline_thresholds: dict[str, float] | None = None  # the group's gate when it was blessed
    baseline_accuracy_bound: str = "point"
    baseline_reference: str | None = None
    narrowed: bool = False  # -k, --deselect, node ids: cases not in this run were not lost
    probe: Probe | None = None  # this variant's speed probe, when a speed gate asked for it
    reference_probe: Probe | None = None  # the reference's, measured in this run
    reference_memory_mb: float | None = None
    baseline_speed: dict[str, float] | None = None  # the probe's decode median/min/max, as blessed
    baseline_memory_mb: float | None = None
    compared: bool = False  # a baseline is being compared with
    reference: str | None = None  # the reference variant's name, if configured
    reference_cases: dict[str, str] | None = None  # its outcomes (this run or the baseline)
    reference_source: str = "this run"
    fidelity: dict[str, Any] | None = None  # recorded after the group's last case
    fidelity_missing: str | None = None


def undecided(c: CaseRecord) -> bool:
    """A case ``--quant-decide-early`` did not run because its verdict was already decided."""
    return c.outcome == "skipped" and c.message.startswith(DECIDED_PREFIX)


def decided_early(rubric: Rubric, cases: list[CaseRecord], total: int) -> str | None:
    """Why the accuracy threshold can no longer be met by a (group, variant) that has
    ``total`` cases, ``cases`` of them recorded so far; None while it still can.

    The best case is every remaining case passing: the Wilson bounds, like the observed
    accuracy, rise with each extra pass and fall with each extra miss (tests/fast checks this
    over a grid), so if the threshold fails even then, it fails whatever the rest do.
    """
    if rubric.accuracy is None or rubric.n_repeats > 1:
        return None  # repeats: a case's outcome needs all its repeats, decided at the verdict
    n = counts(cases)
    ran, passed = n["cases"], n["passed_cases"]
    rest = total - sum(not undecided(c) for c in cases)  # not run yet, or already decided
    bound = rubric.accuracy_bound or "point"
    if ran == passed or rest < 0 or accuracy_holds(rubric.accuracy, bound, passed + rest, ran + rest):
        return None
    size = ran + rest
    allowed = next(k for k in range(size, -1, -1)
                   if k == 0 or accuracy_holds(rubric.accuracy, bound, size - k, size))
    if not accuracy_holds(rubric.accuracy, bound, size, size):
        return f"{DECIDED_PREFIX}accuracy {rubric.accuracy:g} cannot be met by {size} cases"
    what = "misses" if n["failures"] == 0 else "misses and failures"
    return f"{DECIDED_PREFIX}{ran - passed} {what} > {allowed} allowed"


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
    nothing = no_evidence(ev.cases, "case(s)", f" on {variant}")
    if nothing is not None:  # a refused file's cause first, as when its cases error
        return Verdict(group=group, variant=variant, thresholds=rubric.thresholds(), no_verdict=True,
                       reasons=[r for r in (ev.broken, ev.not_loaded) if r] or [nothing])
    n = counts(ev.cases)
    left = sum(map(undecided, ev.cases))
    if left:  # decided early: the accuracy figures are the best case, an upper bound
        n["cases"] += left
        n["passed_cases"] += left
        n["accuracy"] = n["passed_cases"] / n["cases"]
        n["accuracy_ci"] = None
    now = outcomes(ev.cases, variant)
    base = compare_group(ev.baseline_cases, now) if ev.baseline_cases is not None else None
    ref, ref_name, ref_missing = _vs_reference(rubric, ev, now)
    speed = ev.probe.tokens_per_second if ev.probe else None
    prompt_speed = ev.probe.prompt_tokens_per_second if ev.probe else None
    speedup, speedup_range, memory_ratio, relative_missing = _relative(ev, variant)
    fig = GroupFigures(
        cases=n["cases"], passed=n["passed_cases"], misses=n["misses"], failures=n["failures"],
        tokens_per_second=speed.median if speed else ev.calls.tokens_per_second,
        prompt_tokens_per_second=prompt_speed.median if prompt_speed else ev.calls.prompt_tokens_per_second,
        memory_mb=ev.memory_mb, disk_mb=ev.disk_mb or 0.0,
        load_seconds=ev.load_seconds, baseline=base, reference=ref, reference_name=ref_name,
        reference_missing=ref_missing, fidelity=ev.fidelity, fidelity_missing=ev.fidelity_missing,
        speed_range=(speed.min, speed.max) if speed else None,
        prompt_speed_range=(prompt_speed.min, prompt_speed.max) if prompt_speed else None,
        speedup=speedup, speedup_range=speedup_range, memory_ratio=memory_ratio,
        relative_missing=relative_missing, is_reference=variant == ev.reference,
        decode_speed=_triple(ev.probe.decode_tokens_per_second) if ev.probe else None,
        baseline_speed=(ev.baseline_speed["median"], ev.baseline_speed["min"], ev.baseline_speed["max"])
        if ev.baseline_speed else None,
        baseline_memory_mb=ev.baseline_memory_mb, compared=ev.compared, undecided=left,
    )
    reasons = _weakened(rubric, ev, base) + evaluate(rubric, fig)
    if ev.not_loaded is not None:  # the cause, not "accuracy 0.00" from cases that never ran
        reasons = [ev.not_loaded]
    if ev.broken is not None:
        reasons.insert(0, ev.broken)
    return Verdict(
        group=group, variant=variant, thresholds=rubric.thresholds(),
        accuracy_bound=rubric.accuracy_bound or "point", **n,
        tokens_per_second=fig.tokens_per_second, prompt_tokens_per_second=fig.prompt_tokens_per_second,
        memory_mb=fig.memory_mb, disk_mb=fig.disk_mb, load_seconds=fig.load_seconds,
        baseline=base.to_dict() if base else None,
        vs_reference={"reference": ref_name, **ref.to_dict()} if ref else None,
        fidelity=ev.fidelity, reasons=reasons, undecided=left,
        repeats=repeat_figures(ev.cases, rubric.n_repeats, rubric.pass_rate),
    )


def _triple(spread: Spread | None) -> tuple[float, float, float] | None:
    return None if spread is None else (spread.median, spread.min, spread.max)


def _relative(ev: Evidence, variant: str) -> tuple[float | None, tuple[float, float] | None,
                                                   float | None, str | None]:
    """(speedup, its worst..best range, memory ratio, why missing) against the reference."""
    if ev.reference is None:
        return None, None, None, "no reference: set reference: in quantgate.yaml"
    speedup = speedup_range = memory_ratio = None
    missing = None
    unmeasured = f"reference {ev.reference} was not measured in this run (select it with --quant-variants)"
    # decode speed, like llama-bench's tg: what quantization changes (prompt processing is
    # compute-bound and can favour F16), and free of Python overhead
    mine = ev.probe.decode_tokens_per_second if ev.probe else None
    theirs = ev.reference_probe.decode_tokens_per_second if ev.reference_probe else None
    if mine is not None and theirs is not None and theirs.median > 0 and theirs.min > 0:
        speedup = mine.median / theirs.median
        speedup_range = (mine.min / theirs.max, mine.max / theirs.min)
    elif theirs is None:
        missing = unmeasured
    if ev.memory_mb is not None and ev.reference_memory_mb:
        memory_ratio = ev.memory_mb / ev.reference_memory_mb
    elif ev.reference_memory_mb is None:
        missing = unmeasured
    return speedup, speedup_range, memory_ratio, missing


def _weakened(rubric: Rubric, ev: Evidence, base: GroupComparison | None) -> list[str]:
    """The gate must not quietly get weaker than the one the baseline was blessed under: looser
    thresholds, another reference, or baseline cases that did not run (deleted or skipped) fail
    first, until the change is re-blessed and so shows in the pull request's diff."""
    out: list[str] = []
    if ev.baseline_thresholds is not None:
        now = rubric.thresholds()
        looser = []
        for key, old in sorted(ev.baseline_thresholds.items()):
            new = now.get(key)
            kind = RUBRIC_KEYS.get(key, ("max", ""))[0]
            if new is None or (new < old if kind == "min" else new > old):
                looser.append(f"{key} {old:g} -> {'none' if new is None else f'{new:g}'}")
        if ACCURACY_BOUNDS.index(rubric.accuracy_bound or "point") > ACCURACY_BOUNDS.index(
                ev.baseline_accuracy_bound):
            looser.append(f"accuracy_bound {ev.baseline_accuracy_bound} -> {rubric.accuracy_bound or 'point'}")
        if looser:
            out.append(f"the gate is looser than the baseline's: {', '.join(looser)}; "
                       f"re-bless with --quant-update-baseline to accept it")
        if (ev.baseline_reference is not None and ev.baseline_reference != ev.reference
                and (rubric.max_drop_vs_reference is not None or rubric.needs_fidelity)):
            out.append(f"the reference changed from the baseline's {ev.baseline_reference} to "
                       f"{ev.reference}; re-bless with --quant-update-baseline to accept it")
    if base is not None and base.removed:
        skipped = {case_key(c.nodeid, c.variant) for c in ev.cases if c.outcome == "skipped"}
        decided = {case_key(c.nodeid, c.variant) for c in ev.cases if undecided(c)}
        lost = base.removed if not ev.narrowed else [k for k in base.removed if k in skipped]
        lost = [k for k in lost if k not in decided]  # not lost: the verdict was decided
        if lost:
            shown = ", ".join(case_label(k) for k in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            out.append(f"{len(lost)} baseline case(s) did not run (deleted or skipped): {shown}; "
                       "re-bless with --quant-update-baseline to accept it")
    return out


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
