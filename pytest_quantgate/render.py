"""Pure functions that print a ``Summary``: the terminal table and lines, and Markdown for
``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

from .records import case_label
from .stats import mcnemar_exact
from .summary import Summary, VariantRow

PASS_MARK = "ok"
FAIL_MARK = "FAIL"


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
        if gr.undecided and gr.accuracy is not None:  # decided early: the best case, a bound
            acc = f"<= {acc}"
        elif gr.accuracy_ci:
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
    cache = _cache_line(summary)
    if cache:
        lines.append(cache)
    if summary.incomplete:
        lines.append("run incomplete: figures cover only the tests that finished")
    lines.append(_answer(summary))
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
                    parts.append(f"{len(b['regressions'])} regressed ({', '.join(case_label(k) for k in b['regressions'][:4])})")
                if b["fixes"]:
                    parts.append(f"{len(b['fixes'])} fixed ({', '.join(case_label(k) for k in b['fixes'][:4])})")
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


def _cache_line(summary: Summary) -> str | None:
    """How many calls the result cache answered, per variant; which variants never loaded."""
    if not any(r.cached_calls for r in summary.rows):
        return None
    cached = sum(r.cached_calls for r in summary.rows)
    total = cached + sum(r.live_calls for r in summary.rows)
    parts = [f"{r.name} {r.cached_calls}/{r.cached_calls + r.live_calls}"
             + (" (not loaded)" if r.loads == 0 else "") for r in summary.rows]
    return f"result cache: {cached} of {total} calls answered from the cache ({', '.join(parts)})"


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
    out.append(f"**{_answer(summary)}**")
    return "\n".join(out) + "\n"


def _answer(summary: Summary) -> str:
    """The one line the run exists for."""
    if summary.smallest_passing:
        r = summary.row(summary.smallest_passing)
        return f"smallest passing variant: {r.name} ({r.size_mb:.1f} MB)"
    return "no variant passes the rubric"
