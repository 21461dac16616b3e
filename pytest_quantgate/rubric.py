"""The rubric: thresholds, their validation, and the verdict. Pure functions, no pytest here."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from .display import show
from .records import case_label
from .stats import wilson

if TYPE_CHECKING:
    from .stats import GroupComparison, PairedComparison

# key -> (kind, description). "min" thresholds must be met from above, "max" from below.
RUBRIC_KEYS: Mapping[str, tuple[str, str]] = {
    "accuracy": ("min", "fraction of the group's cases that pass, 0..1"),
    "tokens_per_second": ("min", "end-to-end generated tokens / wall time of the group's calls"),
    "prompt_tokens_per_second": ("min", "llama.cpp prompt-processing speed over the group's calls"),
    "memory_mb": ("max", "resident memory the loaded variant adds to the process, MB"),
    "disk_mb": ("max", "GGUF file size, MB"),
    "load_seconds": ("max", "time to load the variant"),
    "max_accuracy_drop": ("max", "allowed accuracy fall against the baseline, 0..1 (default 0)"),
    "max_drop_vs_reference": ("max", "allowed accuracy gap below the reference variant, 0..1"),
    "max_kld": ("max", "mean KL divergence of next-token distributions from the reference's"),
    "min_top1_agreement": ("min", "share of positions where variant and reference agree on the top token"),
    "max_perplexity_ratio": ("max", "perplexity relative to the reference's on the same tokens"),
    "min_speedup_vs_reference": ("min", "probed decode tok/s over the reference's, both measured in this run"),
    "max_memory_vs_reference": ("max", "memory over the reference's, both measured in this run"),
    "max_speed_drop": ("max", "allowed fall of probed decode tok/s below the baseline's, 0..1, beyond noise"),
    "max_memory_growth": ("max", "allowed growth of memory over the baseline's, as a fraction (0.1 = 10%)"),
    "repeats": ("min", "sampled runs of every case (seeds seed, seed+1, ...); greedy calls are made once"),
    "case_pass_rate": ("min", "with repeats: share of a case's repeats that must pass for the case to pass "
                              "(default 1: all)"),
    "accuracy_bound": ("mode", "point (default), lower (the 95% Wilson lower bound must clear accuracy) "
                               "or upper (fail only when even the upper bound is below it)"),
}
ACCURACY_BOUNDS = ("lower", "point", "upper")  # strict to lenient
SPEED_KEYS = ("tokens_per_second", "prompt_tokens_per_second", "min_speedup_vs_reference",
              "max_speed_drop")
RELATIVE_KEYS = ("min_speedup_vs_reference", "max_memory_vs_reference")
FRACTION_KEYS = ("accuracy", "max_accuracy_drop", "max_drop_vs_reference", "min_top1_agreement",
                 "max_speed_drop", "case_pass_rate")
MAX_REPEATS = 64  # one batch of parallel sequences; more is a different experiment
FIDELITY_KEYS = ("max_kld", "min_top1_agreement", "max_perplexity_ratio")

class RubricError(Exception):
    """``key: problem``; callers prefix the test or file it came from."""


@dataclass(frozen=True)
class Rubric:
    accuracy: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    memory_mb: float | None = None
    disk_mb: float | None = None
    load_seconds: float | None = None
    max_accuracy_drop: float | None = None
    max_drop_vs_reference: float | None = None
    max_kld: float | None = None
    min_top1_agreement: float | None = None
    max_perplexity_ratio: float | None = None
    min_speedup_vs_reference: float | None = None
    max_memory_vs_reference: float | None = None
    max_speed_drop: float | None = None
    max_memory_growth: float | None = None
    repeats: float | None = None  # a whole number >= 1; a float like every threshold
    case_pass_rate: float | None = None
    accuracy_bound: str | None = None  # one of ACCURACY_BOUNDS; None means point

    def merged(self, override: Rubric) -> Rubric:
        """``override``'s set keys win: marker values override the yaml defaults."""
        return replace(self, **{k: v for k, v in override.to_dict().items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def thresholds(self) -> dict[str, float]:
        """The numeric thresholds in force (``accuracy_bound`` is a mode, kept apart). With
        repeats, the implicit ones too (every repeat must pass, every case must pass), so a
        baseline blessed under them sees a later loosening as one."""
        out = {k: v for k, v in self.to_dict().items() if v is not None and not isinstance(v, str)}
        if self.n_repeats > 1:
            out.setdefault("case_pass_rate", self.pass_rate)
            out.setdefault("accuracy", self.required_accuracy or 1.0)
        return out

    @property
    def needs_fidelity(self) -> bool:
        return any(getattr(self, k) is not None for k in FIDELITY_KEYS)

    @property
    def needs_probe(self) -> bool:
        """Speed gates are judged on the calibrated probe, not on one pass over the calls."""
        return any(getattr(self, k) is not None for k in SPEED_KEYS)

    @property
    def needs_live(self) -> bool:
        """Gates on figures only a loaded model gives (speed, memory, load time, fidelity):
        they must never be judged on answers from the result cache."""
        return (self.needs_probe or self.needs_fidelity or any(getattr(self, k) is not None for k in (
            "memory_mb", "load_seconds", "max_memory_vs_reference", "max_memory_growth")))

    @property
    def n_repeats(self) -> int:
        return int(self.repeats or 1)

    @property
    def pass_rate(self) -> float:
        """The share of a case's repeats that must pass; all of them unless set."""
        return 1.0 if self.case_pass_rate is None else self.case_pass_rate

    @property
    def required_accuracy(self) -> float | None:
        """The accuracy bar: with repeats and no accuracy set, every case must pass (at its
        pass rate), so a group that only asks for repeats is still judged."""
        if self.accuracy is None and self.n_repeats > 1:
            return 1.0
        return self.accuracy

    @property
    def counts_misses(self) -> bool:
        """With an accuracy below 1, a failed assertion is a miss that counts, not a failure;
        with repeats, one failed repeat is a miss too (the case's pass rate decides)."""
        return (self.accuracy is not None and self.accuracy < 1) or self.n_repeats > 1


def parse_rubric(values: Mapping[str, Any]) -> Rubric:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in RUBRIC_KEYS:
            name = key if isinstance(key, str) and len(key) <= 60 else show(key)
            raise RubricError(f"{name}: unknown key; known keys: {', '.join(RUBRIC_KEYS)}")
        if key == "accuracy_bound":
            if value not in ACCURACY_BOUNDS:
                raise RubricError(f"accuracy_bound: expected point, lower or upper, got {show(value)}")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RubricError(f"{key}: expected a number, got {show(value)}")
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise RubricError(f"{key}: expected a finite number, got {show(value)}")
        if key in FRACTION_KEYS and not 0 <= v <= 1:
            raise RubricError(f"{key}: expected a number between 0 and 1, got {show(value)}")
        if key not in FRACTION_KEYS and v <= 0:
            raise RubricError(f"{key}: expected a positive number, got {show(value)}")
        if key == "case_pass_rate" and v <= 0:
            raise RubricError(f"case_pass_rate: expected a share above 0 (up to 1), got {show(value)}")
        if key == "repeats" and (v != int(v) or not 1 <= v <= MAX_REPEATS):
            raise RubricError(f"repeats: expected a whole number from 1 to {MAX_REPEATS}, got {show(value)}")
        out[key] = v
    return Rubric(**out)


@dataclass(frozen=True)
class GroupFigures:
    """What was measured for one (eval group, variant)."""

    cases: int  # cases that ran (skipped cases excluded)
    passed: int
    misses: int  # failed assertions counted against accuracy
    failures: int  # ordinary failures and errors
    tokens_per_second: float | None  # CallTotals' rates over the group's calls
    prompt_tokens_per_second: float | None
    memory_mb: float | None
    disk_mb: float
    load_seconds: float | None
    baseline: GroupComparison | None = None  # against the committed baseline, if any
    reference: PairedComparison | None = None  # against the reference variant, same cases
    reference_name: str | None = None
    reference_missing: str | None = None  # why no reference comparison was possible
    fidelity: dict[str, Any] | None = None  # Fidelity.summary() against the reference
    fidelity_missing: str | None = None
    speed_range: tuple[float, float] | None = None  # the probe's min..max, when it ran
    prompt_speed_range: tuple[float, float] | None = None
    speedup: float | None = None  # probed tok/s over the reference's
    speedup_range: tuple[float, float] | None = None  # worst and best pairing of the two ranges
    memory_ratio: float | None = None  # memory over the reference's
    relative_missing: str | None = None  # why the reference-relative figures are missing
    is_reference: bool = False  # relative gates do not apply to the reference itself
    decode_speed: tuple[float, float, float] | None = None  # the probe's decode median, min, max
    baseline_speed: tuple[float, float, float] | None = None  # the same, as blessed
    baseline_memory_mb: float | None = None
    compared: bool = False  # a baseline is being compared with (not absent, not being blessed)
    undecided: int = 0  # cases not run once the verdict was decided (counted as passes: a bound)

    @property
    def accuracy(self) -> float | None:
        return self.passed / self.cases if self.cases else None

def evaluate(rubric: Rubric, fig: GroupFigures) -> list[str]:
    """One line per missed threshold, measured against required; empty when the rubric holds."""
    reasons: list[str] = []
    if rubric.required_accuracy is not None:
        _check_accuracy(reasons, rubric.required_accuracy, rubric.accuracy_bound or "point", fig)
    _check_min(reasons, "speed", fig.tokens_per_second, rubric.tokens_per_second, "tok/s", fig.speed_range)
    _check_min(reasons, "prompt speed", fig.prompt_tokens_per_second, rubric.prompt_tokens_per_second,
               "tok/s", fig.prompt_speed_range)
    _check_max(reasons, "memory", fig.memory_mb, rubric.memory_mb, "MB", 0)
    _check_max(reasons, "disk", fig.disk_mb, rubric.disk_mb, "MB", 1)
    _check_max(reasons, "load", fig.load_seconds, rubric.load_seconds, "s", 2)
    base = fig.baseline
    if base is not None and base.common:
        allowed = rubric.max_accuracy_drop or 0.0
        if base.drop > allowed + 1e-9:
            shown = ", ".join(case_label(c) for c in base.regressions[:5])
            more = f" and {len(base.regressions) - 5} more" if len(base.regressions) > 5 else ""
            reasons.append(
                f"accuracy fell {base.drop:.2f} > {allowed:.2f} vs baseline "
                f"({base.baseline_accuracy:.2f} -> {base.accuracy:.2f} on {base.common} cases); "
                f"regressed: {shown}{more}"
            )
    if rubric.max_drop_vs_reference is not None:
        ref = fig.reference
        if ref is None:
            reasons.append(f"max_drop_vs_reference: {fig.reference_missing or 'no reference results'}")
        elif ref.drop > rubric.max_drop_vs_reference + 1e-9:
            reasons.append(
                f"{ref.drop:.2f} below reference {fig.reference_name} > "
                f"{rubric.max_drop_vs_reference:.2f} allowed (lost {ref.lost}, gained {ref.gained} "
                f"of {ref.cases}; exact McNemar p={ref.p_value:.3g})"
            )
    _check_fidelity(reasons, rubric, fig)
    _check_relative(reasons, rubric, fig)
    _check_drift(reasons, rubric, fig)
    return reasons


def _check_drift(reasons: list[str], rubric: Rubric, fig: GroupFigures) -> None:
    """Speed and memory against the baseline's figures, failing only beyond measured noise: the
    floor is taken from the baseline's slowest run, and a floor inside this run's spread cannot
    be decided (fails closed as unstable). Like max_accuracy_drop, they apply when a baseline is
    compared with, not while one is being blessed."""
    if not fig.compared:
        return
    if rubric.max_speed_drop is not None:
        now, base = fig.decode_speed, fig.baseline_speed
        if base is None:
            reasons.append("max_speed_drop: the baseline has no speed for this variant; "
                           "bless it with a speed gate in place")
        elif now is None:
            reasons.append("max_speed_drop: decode speed not measured")
        else:
            floor = base[1] * (1 - rubric.max_speed_drop)
            shown = (f"decode {now[0]:.1f} tok/s ({now[1]:.1f}-{now[2]:.1f}) vs the baseline's "
                     f"{base[0]:.1f} ({base[1]:.1f}-{base[2]:.1f})")
            if now[2] < floor:
                reasons.append(f"{shown}: fell more than {rubric.max_speed_drop:.0%} (floor {floor:.1f})")
            elif now[1] <= floor:
                reasons.append(f"{shown}: the {rubric.max_speed_drop:.0%} floor {floor:.1f} is inside "
                               "this run's spread: unstable; raise speed_probe.repeats or quiet the machine")
    if rubric.max_memory_growth is not None:
        if fig.baseline_memory_mb is None or fig.memory_mb is None:
            reasons.append("max_memory_growth: " + ("the baseline has no memory for this variant"
                                                    if fig.baseline_memory_mb is None else "not measured"))
        elif fig.memory_mb > fig.baseline_memory_mb * (1 + rubric.max_memory_growth):
            reasons.append(f"memory {fig.memory_mb:.1f} MB grew more than {rubric.max_memory_growth:.0%} "
                           f"over the baseline's {fig.baseline_memory_mb:.1f} MB")


def accuracy_holds(need: float, bound: str, passed: int, cases: int) -> bool:
    """The accuracy threshold's test, alone: ``--quant-decide-early`` asks it of the best case."""
    if cases <= 0:
        return False
    lo, hi = wilson(passed, cases)
    return {"point": passed / cases >= need, "lower": lo >= need, "upper": hi >= need}[bound]


def _check_accuracy(reasons: list[str], need: float, bound: str, fig: GroupFigures) -> None:
    """``point``: the observed accuracy; ``lower``: its 95% Wilson lower bound must clear the
    threshold (strict: a small eval set cannot pass by luck); ``upper``: fail only when even the
    upper bound is below it (lenient: only a drop the cases can show fails). After an early
    decision the figures are the best case (every case not run counted as passed): a bound."""
    acc = fig.accuracy
    if acc is None:
        reasons.append("accuracy: no case ran")
        return
    if accuracy_holds(need, bound, fig.passed, fig.cases):
        return
    lo, hi = wilson(fig.passed, fig.cases)
    counted = f"{fig.passed}/{fig.cases} cases"
    shown = f"{acc:.2f}"
    if fig.undecided:
        counted = f"at best {counted}; {fig.undecided} not run, verdict decided early"
        shown = f"<= {acc:.2f}"
    if bound == "point":
        reasons.append(f"accuracy {shown} < {need:.2f} ({counted})")
    elif bound == "lower":
        enough = cases_for_lower_bound(acc, need)
        hint = f"; at {acc:.2f} the bound clears {need:.2f} from {enough} cases" if enough else ""
        reasons.append(f"accuracy {shown} [{lo:.2f}-{hi:.2f}]: lower bound {lo:.2f} < {need:.2f} "
                       f"(accuracy_bound: lower, {counted}{hint})")
    else:
        reasons.append(f"accuracy {shown} [{lo:.2f}-{hi:.2f}]: even the upper bound {hi:.2f} < "
                       f"{need:.2f} (accuracy_bound: upper, {counted})")


def cases_for_lower_bound(accuracy: float, need: float, limit: int = 20_000) -> int | None:
    """The fewest cases at this accuracy whose Wilson lower bound reaches ``need``."""
    if accuracy <= need:
        return None
    return next((n for n in range(1, limit + 1) if wilson(round(accuracy * n), n)[0] >= need), None)


def _check_relative(reasons: list[str], rubric: Rubric, fig: GroupFigures) -> None:
    """Gates that hold on any machine: this variant against the reference, both measured in
    this run (a ratio cancels most of what differs between a laptop and a CI runner)."""
    if fig.is_reference or all(getattr(rubric, k) is None for k in RELATIVE_KEYS):
        return
    if rubric.min_speedup_vs_reference is not None:
        if fig.speedup is None:
            reasons.append(f"min_speedup_vs_reference: {fig.relative_missing or 'not measured'}")
        else:
            _check_min(reasons, "speedup vs reference", fig.speedup, rubric.min_speedup_vs_reference,
                       "x", fig.speedup_range, digits=2)
    if rubric.max_memory_vs_reference is not None:
        if fig.memory_ratio is None:
            reasons.append(f"max_memory_vs_reference: {fig.relative_missing or 'not measured'}")
        elif fig.memory_ratio > rubric.max_memory_vs_reference:
            reasons.append(f"memory vs reference {fig.memory_ratio:.2f}x > "
                           f"{rubric.max_memory_vs_reference:g}x")


def _check_fidelity(reasons: list[str], rubric: Rubric, fig: GroupFigures) -> None:
    if not rubric.needs_fidelity:
        return
    f = fig.fidelity
    if f is not None and f.get("reference") is True:
        return  # the reference itself: it is what the others are measured against
    if f is None or not f.get("positions"):
        reasons.append(f"fidelity: {fig.fidelity_missing or 'no tokens to score'}")
        return
    if rubric.max_kld is not None and f["mean_kld"] > rubric.max_kld:
        reasons.append(f"mean KLD {f['mean_kld']:.4f} > {rubric.max_kld:g} (p99 {f['p99_kld']:.3f}, "
                       f"{f['positions']} positions)")
    if rubric.min_top1_agreement is not None and f["top1_agreement"] < rubric.min_top1_agreement:
        reasons.append(f"top-1 agreement {f['top1_agreement']:.3f} < {rubric.min_top1_agreement:g}")
    if rubric.max_perplexity_ratio is not None and f["perplexity_ratio"] > rubric.max_perplexity_ratio:
        reasons.append(f"perplexity ratio {f['perplexity_ratio']:.3f} > {rubric.max_perplexity_ratio:g}")


def _check_min(out: list[str], label: str, got: float | None, need: float | None, unit: str,
               spread: tuple[float, float] | None = None, digits: int = 1) -> None:
    """``got`` >= ``need``; with a measured spread, a threshold inside min..max cannot be
    decided: it fails closed rather than pass or fail by chance."""
    if need is None:
        return
    if got is None:
        out.append(f"{label}: not measured (no generation call in this group)")
    elif spread is not None and spread[0] <= need <= spread[1]:
        out.append(f"{label} {got:.{digits}f} {unit} ({spread[0]:.{digits}f}-{spread[1]:.{digits}f}) "
                   f"too close to {need:g} {unit}: unstable; raise speed_probe.repeats or quiet "
                   "the machine")
    elif got < need:
        out.append(f"{label} {got:.{digits}f} {unit} < {need:g} {unit}")


def _check_max(
    out: list[str], label: str, got: float | None, limit: float | None, unit: str, digits: int
) -> None:
    if limit is None:
        return
    if got is None:
        out.append(f"{label}: not measured")
    elif got > limit:
        out.append(f"{label} {got:.{digits}f} {unit} > {limit:g} {unit}")
