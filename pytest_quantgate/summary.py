"""The end-of-session ``Summary``: verdicts and case records -> one row per variant, the
smallest passing variant overall and per group. Printing it is ``render.py``'s job.

Inputs are what travelled on test reports, so the same code serves a plain run and the
controller of a ``pytest -n`` run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .constants import MB
from .records import CaseRecord, Verdict, case_key, no_evidence


@dataclass
class GroupResult(Verdict):
    """A verdict as the summary shows it: with every case's outcome (node id -> outcome)."""

    case_outcomes: dict[str, str] = field(default_factory=dict)
    # cases whose pass/fail differs from the reference's (this run) or the baseline's:
    # {"key", "against": "reference" | "baseline", "was", "now"}
    flips: list[dict[str, str]] = field(default_factory=list)


@dataclass
class VariantRow:
    name: str
    file_type: str
    path: str
    sha256: str
    size_bytes: int
    loads: int
    load_seconds: float | None
    memory_mb: float | None
    tokens_per_second: float | None
    decode_tokens_per_second: float | None
    prompt_tokens_per_second: float | None
    groups: dict[str, GroupResult]
    failed_tests: list[str]  # ordinary failures and errors (misses excluded)
    passed: bool
    reasons: list[str]
    fidelity: dict[str, Any] | None = None  # over all groups, weighted by positions
    probe: dict[str, Any] | None = None  # the speed probe: median/min/max/spread per figure
    live_calls: int = 0  # calls the model answered in this run
    cached_calls: int = 0  # calls the result cache answered
    reused_calls: int = 0  # repeats answered by their case's batch or a greedy call made once
    batched: dict[str, Any] | None = None  # repeats decoded as parallel sequences: all-sequence throughput
    cases: list[dict[str, Any]] = field(default_factory=list)  # CaseRecord.to_dict(), transcripts included

    @property
    def size_mb(self) -> float:
        return self.size_bytes / MB


@dataclass
class Summary:
    rows: list[VariantRow]  # smallest file first
    groups: list[str]
    smallest_passing: str | None
    smallest_passing_by_group: dict[str, str | None]
    gate: str
    incomplete: bool = False
    environment: dict[str, Any] = field(default_factory=dict)
    baseline_note: str | None = None  # "baseline: llama-cpp-python 0.3.35 -> 0.3.36; ..."
    baseline_changes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # group key -> shortest unambiguous name
    reference: str | None = None  # the reference variant, what flipped cases are compared with

    def label(self, group: str) -> str:
        return self.labels.get(group) or group_labels([group])[group]

    def row(self, name: str) -> VariantRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "smallest_passing": self.smallest_passing,
            "smallest_passing_by_group": self.smallest_passing_by_group,
            "gate": self.gate,
            "incomplete": self.incomplete,
            "environment": self.environment,
            "baseline": {"note": self.baseline_note, "changes": self.baseline_changes},
            "groups": self.groups,
            "group_labels": {g: self.label(g) for g in self.groups},
            "variants": [_row_dict(r) for r in self.rows],
        }


def _row_dict(r: VariantRow) -> dict[str, Any]:
    d = asdict(r)
    d["size_mb"] = round(r.size_mb, 3)
    return d


def build_summary(
    *,
    variants: dict[str, dict[str, Any]],  # name -> Variant.to_dict() + stats snapshot
    cases: list[CaseRecord],
    verdicts: dict[tuple[str, str], Verdict],  # (group, variant) -> its verdict
    gate: str,
    incomplete: bool = False,
    environment: dict[str, Any] | None = None,
    reference: str | None = None,
) -> Summary:
    names = [n for n in variants if any(c.variant == n for c in cases) or any(v == n for _, v in verdicts)]
    groups: list[str] = []
    for g, _ in verdicts:
        if g not in groups:
            groups.append(g)
    labels = group_labels(groups)
    rows: list[VariantRow] = []
    for name in names:
        info = variants[name]
        mine = [c for c in cases if c.variant == name]
        failed = [c.nodeid for c in mine if c.outcome in ("failed", "error")]
        group_results: dict[str, GroupResult] = {}
        for g in groups:
            v = verdicts.get((g, name))
            if v is None:
                continue
            in_group = [c for c in mine if c.group == g]
            theirs = [c for c in cases if c.variant == reference and c.group == g] if name != reference else []
            group_results[g] = GroupResult(**v.to_dict(),
                                           case_outcomes={c.nodeid: c.outcome for c in in_group},
                                           flips=flips(in_group, theirs, v.baseline))
        reasons: list[str] = []
        for g, gr in group_results.items():
            reasons.extend(f"{labels[g]}: {r}" for r in gr.reasons)
        if failed:
            reasons.append(f"{len(failed)} test(s) failed: {failed[0]}")
        nothing = no_evidence(mine, "test(s)") if mine and not reasons else None
        if nothing is not None:  # no evidence is not a pass, with or without a rubric
            reasons.append(nothing)
        stats = info.get("stats") or {}
        rows.append(
            VariantRow(
                name=name,
                file_type=str(info.get("file_type", "")),
                path=str(info.get("path", "")),
                sha256=str(info.get("sha256", "")),
                size_bytes=int(info.get("size_bytes", 0)),
                loads=int(stats.get("loads", 0)),
                load_seconds=stats.get("load_seconds"),
                memory_mb=stats.get("memory_mb"),
                tokens_per_second=stats.get("tokens_per_second"),
                decode_tokens_per_second=stats.get("decode_tokens_per_second"),
                prompt_tokens_per_second=stats.get("prompt_tokens_per_second"),
                groups=group_results,
                failed_tests=failed,
                passed=not reasons,
                reasons=reasons,
                fidelity=_pool_fidelity([g.fidelity for g in group_results.values()]),
                probe=stats.get("probe"),
                # calls the model answered: one by one, or as sequences of a batched decode
                live_calls=int((stats.get("calls") or {}).get("calls", 0))
                + int((stats.get("batched") or {}).get("sequences", 0)),
                cached_calls=int(stats.get("cached_calls", 0)),
                reused_calls=int(stats.get("reused_calls", 0)),
                batched=stats.get("batched"),
                cases=[c.to_dict() for c in mine],
            )
        )
    rows.sort(key=lambda r: (r.size_bytes, r.name))
    passing = [r for r in rows if r.passed]
    by_group: dict[str, str | None] = {}
    for g in groups:
        ok = [
            r for r in rows
            if g in r.groups and r.groups[g].passed
            and not any(o in ("failed", "error") for o in r.groups[g].case_outcomes.values())
        ]
        by_group[g] = ok[0].name if ok else None
    return Summary(
        rows=rows,
        groups=groups,
        smallest_passing=passing[0].name if passing else None,
        smallest_passing_by_group=by_group,
        gate=gate,
        incomplete=incomplete,
        environment=environment or {},
        labels=labels,
        reference=reference,
    )


def flips(cases: list[CaseRecord], reference: list[CaseRecord],
          baseline: dict[str, Any] | None) -> list[dict[str, str]]:
    """The group's cases whose pass/fail differs from the reference variant's in this run and
    from the baseline's (skipped cases are not compared), reference first, in case order."""
    ran = {case_key(c.nodeid, c.variant): c.outcome for c in cases if c.outcome != "skipped"}
    ref = {case_key(c.nodeid, c.variant): c.outcome for c in reference if c.outcome != "skipped"}
    out = [{"key": k, "against": "reference", "was": ref[k], "now": o}
           for k, o in ran.items() if k in ref and (ref[k] == "passed") != (o == "passed")]
    was = (baseline or {}).get("was") or {}
    out += [{"key": k, "against": "baseline", "was": str(was[k]), "now": o}
            for k, o in ran.items() if k in was]
    return out


def _pool_fidelity(items: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """A variant's fidelity over all its groups: position-weighted means; p99 is the worst group's."""
    import math

    parts = [f for f in items if f and f.get("positions") and f.get("mean_nll") is not None]
    if not parts:
        return None
    if parts[0].get("source") == "corpus":  # every group scored the same corpus
        parts = parts[:1]
    n = sum(f["positions"] for f in parts)

    def w(key: str) -> float:
        return float(sum(f[key] * f["positions"] for f in parts) / n)

    return {
        "positions": n,
        "reference": parts[0].get("reference"),
        "mean_kld": w("mean_kld"),
        "p99_kld": max(f["p99_kld"] for f in parts),
        "top1_agreement": w("top1_agreement"),
        "perplexity_ratio": math.exp(w("mean_nll") - w("ref_mean_nll")),
    }


def group_labels(groups: list[str]) -> dict[str, str]:
    """Each group key by its shortest unambiguous name: ``a/test_x.py`` and ``b/test_x.py``
    keep their folders, a lone ``tests/test_qa.py::TestX`` shows as ``test_qa.py::TestX``."""

    def name(group: str, depth: int) -> str:
        path, sep, rest = group.partition("::")
        parts = path.split("/")
        return "/".join(parts[-depth:]) + sep + rest

    out: dict[str, str] = {}
    for g in groups:
        depth = 1
        while depth < g.partition("::")[0].count("/") + 1 and any(
                name(h, depth) == name(g, depth) for h in groups if h != g):
            depth += 1
        out[g] = name(g, depth)
    return out
