"""Compute, then render: the end-of-session ``Summary`` and pure functions that print it.

Inputs are the plain dicts that travelled on test reports, so the same code serves a plain
run and the controller of a ``pytest -n`` run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .rubric import MB
from .stats import mcnemar_exact

PASS_MARK = "ok"
FAIL_MARK = "FAIL"


@dataclass(frozen=True)
class CaseRecord:
    nodeid: str
    variant: str
    group: str | None
    outcome: str  # passed | miss | failed | error | skipped
    message: str = ""


@dataclass
class GroupResult:
    group: str
    variant: str
    thresholds: dict[str, float]
    cases: int
    passed_cases: int
    misses: int
    failures: int
    accuracy: float | None
    tokens_per_second: float | None
    passed: bool
    reasons: list[str]
    case_outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> outcome
    accuracy_ci: list[float] | None = None  # 95% Wilson interval
    baseline: dict[str, Any] | None = None  # GroupComparison.to_dict()
    vs_reference: dict[str, Any] | None = None  # PairedComparison.to_dict() + reference name
    fidelity: dict[str, Any] | None = None  # mean/p99 KLD, top-1 agreement, perplexity ratio
    no_verdict: bool = False  # no case was evaluated: nothing to judge, so never a pass


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
    verdicts: dict[tuple[str, str], dict[str, Any]],  # (group, variant) -> verdict dict
    gate: str,
    incomplete: bool = False,
    environment: dict[str, Any] | None = None,
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
            group_results[g] = GroupResult(
                group=g,
                variant=name,
                thresholds=dict(v["thresholds"]),
                cases=int(v["cases"]),
                passed_cases=int(v["passed_cases"]),
                misses=int(v["misses"]),
                failures=int(v["failures"]),
                accuracy=v["accuracy"],
                tokens_per_second=v.get("tokens_per_second"),
                passed=bool(v["passed"]),
                reasons=list(v["reasons"]),
                case_outcomes={c.nodeid: c.outcome for c in in_group},
                accuracy_ci=v.get("accuracy_ci"),
                baseline=v.get("baseline"),
                vs_reference=v.get("vs_reference"),
                fidelity=v.get("fidelity"),
                no_verdict=bool(v.get("no_verdict")),
            )
        reasons: list[str] = []
        for g, gr in group_results.items():
            reasons.extend(f"{labels[g]}: {r}" for r in gr.reasons)
        if failed:
            reasons.append(f"{len(failed)} test(s) failed: {failed[0]}")
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
    )


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


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row_cells(summary: Summary, r: VariantRow, marks: tuple[str, str], ok: str, bad: str) -> list[str]:
    """One table row: figures, each group's accuracy [95% interval] and mark, the verdict."""
    cells = [r.name, f"{r.size_mb:.1f}", _fmt(r.memory_mb, 1), _fmt(r.load_seconds, 2),
             _fmt(r.tokens_per_second, 1)]
    for g in summary.groups:
        gr = r.groups.get(g)
        if gr is None:
            cells.append("-")
            continue
        if gr.no_verdict:
            cells.append("no verdict")
            continue
        acc = "n/a" if gr.accuracy is None else f"{gr.accuracy:.2f}"
        if gr.accuracy_ci:
            acc += f" [{gr.accuracy_ci[0]:.2f}-{gr.accuracy_ci[1]:.2f}]"
        cells.append(f"{acc} {marks[0] if gr.passed else marks[1]}")
    cells.append(ok if r.passed else bad + r.reasons[0])
    return cells


def render_lines(summary: Summary) -> list[str]:
    """The terminal summary as plain lines (no colour): a table, then the one-line answer."""
    if not summary.rows:
        return ["no quant variant ran"]
    lines: list[str] = [summary.baseline_note] if summary.baseline_note else []
    header = ["variant", "disk MB", "mem MB", "load s", "gen tok/s"]
    header += [summary.label(g) for g in summary.groups]
    header += ["verdict"]
    table: list[list[str]] = [header]
    table += [_row_cells(summary, r, (PASS_MARK, FAIL_MARK), "pass", "FAIL: ") for r in summary.rows]
    widths = _widths(table)
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines += _comparison_lines(summary)
    if summary.incomplete:
        lines.append("run incomplete: figures cover only the tests that finished")
    if summary.smallest_passing:
        r = summary.row(summary.smallest_passing)
        lines.append(f"smallest passing variant: {r.name} ({r.size_mb:.1f} MB)")
    else:
        lines.append("no variant passes the rubric")
    if len(summary.groups) > 1:
        for g in summary.groups:
            best = summary.smallest_passing_by_group.get(g)
            lines.append(f"  {summary.label(g)}: {('smallest passing ' + best) if best else 'no variant passes'}")
    return lines


def _comparison_lines(summary: Summary) -> list[str]:
    out: list[str] = []
    for r in summary.rows:
        for g, gr in r.groups.items():
            b = gr.baseline
            if b and (b["regressions"] or b["fixes"] or b["added"] or b["removed"]):
                parts = []
                if b["regressions"]:
                    parts.append(f"{len(b['regressions'])} regressed ({', '.join(_tail(k) for k in b['regressions'][:4])})")
                if b["fixes"]:
                    parts.append(f"{len(b['fixes'])} fixed ({', '.join(_tail(k) for k in b['fixes'][:4])})")
                if b["added"] or b["removed"]:
                    parts.append(f"{len(b['added'])} new, {len(b['removed'])} removed cases not compared")
                p = mcnemar_exact(len(b["regressions"]), len(b["fixes"]))
                noise = f"; McNemar p={p:.3g}" + (", within noise" if b["regressions"] and p >= 0.05 else "")
                out.append(f"{r.name} {summary.label(g)} vs baseline: " + "; ".join(parts) + noise)
            f = gr.fidelity
            if f and f.get("positions"):
                out.append(f"{r.name} {summary.label(g)} fidelity vs {f['reference']}: mean KLD {f['mean_kld']:.4f}, "
                           f"p99 {f['p99_kld']:.3f}, top-1 {f['top1_agreement'] * 100:.1f}%, "
                           f"PPL ratio {f['perplexity_ratio']:.3f} ({f['positions']} positions)")
            ref = gr.vs_reference
            if ref:
                note = ""
                if ref["underpowered"]:
                    note = (f"; too few cases: {ref['cases']} cases cannot show a drop of "
                            f"{gr.thresholds.get('max_drop_vs_reference', 0):.2f} as significant")
                elif ref["drop"] > 0 and ref["p_value"] >= 0.05:
                    note = "; within noise"
                out.append(f"{r.name} {summary.label(g)} vs {ref['reference']}: {ref['drop']:+.2f} drop "
                           f"(lost {ref['lost']}, gained {ref['gained']}, McNemar p={ref['p_value']:.3g}){note}")
    return out


def _tail(key: str) -> str:
    return key[key.index("[") + 1 : -1] if key.endswith("]") and "[" in key else key.rsplit("::", 1)[-1]


def _widths(table: list[list[str]]) -> list[int]:
    # The last column (verdict and reason) is left unpadded so long reasons do not widen the rest.
    n = len(table[0])
    return [max(len(row[i]) for row in table) if i < n - 1 else 0 for i in range(n)]


def render_markdown(summary: Summary) -> str:
    """The same table for ``$GITHUB_STEP_SUMMARY``."""
    header = ["variant", "disk MB", "mem MB", "load s", "gen tok/s"]
    header += [f"`{summary.label(g)}`" for g in summary.groups] + ["verdict"]
    out = ["### quantgate", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary.rows:
        cells = _row_cells(summary, r, ("✅", "❌"), "✅ pass", "❌ ")
        cells[0] = f"**{r.name}**"
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out.append("")
    if summary.smallest_passing:
        r = summary.row(summary.smallest_passing)
        out.append(f"**smallest passing variant: {r.name} ({r.size_mb:.1f} MB)**")
    else:
        out.append("**no variant passes the rubric**")
    return "\n".join(out) + "\n"
