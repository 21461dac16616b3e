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
    lines += _flip_lines(summary)
    lines += _repeat_lines(summary)
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


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(case_label(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _flip_lines(summary: Summary) -> list[str]:
    """Cases whose pass/fail differs from the reference's, counts first (-rx has each miss)."""
    out: list[str] = []
    for r in summary.rows:
        for g, gr in r.groups.items():
            against = [f for f in gr.flips if f["against"] == "reference"]
            if not against:
                continue
            lost = [f["key"] for f in against if f["was"] == "passed"]
            gained = [f["key"] for f in against if f["now"] == "passed"]
            parts = ([f"{len(lost)} lost ({_names(lost)})"] if lost else []) + (
                [f"{len(gained)} gained ({_names(gained)})"] if gained else [])
            out.append(f"{r.name} {summary.label(g)} flipped vs {summary.reference}: " + "; ".join(parts))
    return out


def _repeat_lines(summary: Summary) -> list[str]:
    """Sampled repeats: per (group, variant) the pass-rate figures; per variant the batched
    decodes' throughput, all sequences together (single-stream speed is the table's)."""
    out: list[str] = []
    for r in summary.rows:
        for g, gr in r.groups.items():
            f = gr.repeats
            if not f:
                continue
            lo, hi = f["pass_rate_ci"]
            at = ", ".join(f"pass@{k} {v:.2f}" for k, v in (f.get("pass_at_k") or {}).items())
            hat = ", ".join(f"pass^{k} {v:.2f}" for k, v in (f.get("pass_hat_k") or {}).items() if k != "1")
            rule = ("when all its repeats pass" if f["case_pass_rate"] >= 1
                    else f"at >= {f['case_pass_rate']:g} of its repeats")
            parts = [f"{f['repeats']} repeats, mean pass rate {f['mean_pass_rate']:.2f} [{lo:.2f}-{hi:.2f}]",
                     at, hat, f"a case passes {rule}", f"{f['flaky_cases']} of {f['cases']} cases flaky"]
            out.append(f"{summary.label(g)} on {r.name}: " + "; ".join(p for p in parts if p))
    for r in summary.rows:
        b = r.batched
        if b and b.get("tokens_per_second"):
            check = b.get("check")
            out.append(f"{r.name} batched repeats: {b['batches']} decodes, {b['sequences']} sequences, "
                       f"{b['tokens_per_second']:.1f} tok/s over all sequences together "
                       "(throughput, not the speed one user sees)"
                       + (f"; {check}" if isinstance(check, str) and not check.startswith("verified") else ""))
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


COMMENT_LIMIT = 65_536  # characters in a GitHub pull-request comment


def render_markdown(summary: Summary, limit: int = COMMENT_LIMIT) -> str:
    """The table, then each (variant, group)'s flipped cases in a collapsible section with both
    answers side by side: what a pull-request comment or ``$GITHUB_STEP_SUMMARY`` shows. Kept
    under ``limit`` characters by leaving out the rows that do not fit, with a note saying so."""
    out = [_markdown_table(summary)]
    note = ("\n_{n} more flipped case(s) not shown: the comment would pass GitHub's 65,536-character "
            "limit; the JSON or HTML report has every case._\n")
    room = limit - len(out[0]) - len(note) - 16
    sections = _flip_sections(summary)
    left = sum(len(rows) for _, rows in sections)
    for head, rows in sections:
        closing = "\n\n</details>\n"
        if len(head) + len(closing) + (len(rows[0]) if rows else 0) > room:
            break
        shown: list[str] = []
        used = len(head) + len(closing)
        for row in rows:
            if used + len(row) > room:
                break
            shown.append(row)
            used += len(row)
        block = head + "".join(shown) + closing
        out.append(block)
        room -= len(block)
        left -= len(shown)
        if len(shown) < len(rows):
            break
    if left:
        out.append(note.format(n=left))
    return "".join(out)


def _cell(text: str, limit: int = 280) -> str:
    """Markdown-table safe: one line, pipes escaped, HTML-ish text shown as text."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return (flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("`", "'")) or " "


def _answer_of(row: VariantRow | None, key: str) -> str:
    if row is None:
        return ""
    case = next((c for c in row.cases if c.get("key") == key), None)
    if case is None:
        return ""
    return " ⏎ ".join(str(call.get("reply", "")) for call in case.get("calls", [])) or case.get("message", "")


def _flip_sections(summary: Summary) -> list[tuple[str, list[str]]]:
    """(the section's opening, one table row per flipped case) per (variant, group)."""
    ref = next((r for r in summary.rows if r.name == summary.reference), None)
    out: list[tuple[str, list[str]]] = []
    for r in summary.rows:
        for g, gr in r.groups.items():
            if not gr.flips:
                continue
            n_ref = sum(f["against"] == "reference" for f in gr.flips)
            n_base = len(gr.flips) - n_ref
            counts = ", ".join(p for p in (f"{n_ref} vs {summary.reference}" if n_ref else "",
                                           f"{n_base} vs baseline" if n_base else "") if p)
            head = (f"\n<details><summary><b>{_cell(r.name)}</b> <code>{_cell(summary.label(g))}</code>: "
                    f"{len(gr.flips)} flipped ({counts})</summary>\n\n"
                    f"| case | vs | was | now | {_cell(r.name)} answered | "
                    f"{_cell(str(summary.reference))} answered |\n|---|---|---|---|---|---|")
            rows = []
            for f in gr.flips:
                vs = summary.reference if f["against"] == "reference" else "baseline"
                rows.append(f"\n| `{_cell(case_label(f['key']))}` | {_cell(str(vs))} | {f['was']} | {f['now']} | "
                            f"{_cell(_answer_of(r, f['key']))} | {_cell(_answer_of(ref, f['key']))} |")
            out.append((head, rows))
    return out


def _markdown_table(summary: Summary) -> str:
    """The same table as the terminal's, for Markdown."""
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
