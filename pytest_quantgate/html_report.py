"""``--quant-html`` and ``quantgate report --html``: the JSON report as one self-contained HTML
page (summary, size-quality chart, speed and memory, fidelity, every case with its transcript
beside the reference's, filterable).

Rendered by Jinja2 from ``templates/report.html.j2``: it comes with llama-cpp-python, and a
template keeps the page's markup in one readable file instead of concatenated strings.
Autoescaping is on because replies are model output and may well contain ``<script>``. The
page loads nothing: styles and the filter script are inline, the chart is inline SVG
(svg_chart.py), fonts are the system's.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape

from .atomic import write_text
from .records import OUTCOMES, case_label
from .report_view import Call, Case, Flip, Report, Row, environment_lines, parse_report
from .svg_chart import colour, render_chart

# "http" written by a model or in a node id is shown as text, but a reader checking that the
# file is self-contained greps for it; an entity for its "h" keeps that check meaningful.
_HTTP = re.compile("h(?=ttp)", re.IGNORECASE)


@dataclass(frozen=True)
class CallPair:
    """The n-th call of a case on this variant and on the reference; a prompt both read
    identically is shown once."""

    shared_prompt: str | None
    mine: Call | None
    ref: Call | None


@dataclass(frozen=True)
class CaseView:
    variant: str
    case: Case
    label: str  # the case's short name (its parameters)
    group_label: str
    flips: tuple[Flip, ...]
    ref: Case | None  # the reference variant's run of the same case, when there is one
    pairs: tuple[CallPair, ...]

    @property
    def css(self) -> str:
        return self.case.outcome if self.case.outcome in OUTCOMES else "other"


def render_html(report: dict[str, Any]) -> str:
    """The page for a JSON report (``report.report_dict`` or a saved file). Raises
    ``ReportError`` (a ValueError naming the field) when the dict lacks the shape it needs."""
    view = parse_report(report)
    return _template().render(
        r=view,
        chart=Markup(render_chart(view)),
        cases=case_views(view),
        colours={g: colour(i) for i, g in enumerate(view.groups)},
        environment=environment_lines(view.environment),
        outcomes=OUTCOMES,
        has_fidelity=any(row.fidelity or any(g.fidelity for g in row.groups.values()) for row in view.rows),
        has_probe=any(row.probe for row in view.rows),
        has_flips=any(g.flips for row in view.rows for g in row.groups.values()),
        transcripts=any(row.transcripts for row in view.rows),
        speed_max=max((row.tokens_per_second or 0.0 for row in view.rows), default=0.0),
        memory_max=max((row.memory_mb or 0.0 for row in view.rows), default=0.0),
    )


def write_html(path: Path, report: dict[str, Any]) -> None:
    """Render and write atomically; raises ReportError (bad report) or OSError (nothing left behind)."""
    write_text(path, render_html(report))


def case_views(report: Report) -> list[CaseView]:
    """Every case of every variant, smallest variant first, each with the reference's run."""
    ref_row = report.row(report.reference)
    ref_cases = {c.key: c for c in ref_row.cases} if ref_row else {}
    out = []
    for row in report.rows:
        flipped = row.flipped
        for c in row.cases:
            ref = ref_cases.get(c.key) if row is not ref_row else None
            out.append(CaseView(row.name, c, case_label(c.key), report.label(c.group),
                                flipped.get(c.key, ()), ref, _pairs(c, ref)))
    return out


def _pairs(case: Case, ref: Case | None) -> tuple[CallPair, ...]:
    theirs = ref.calls if ref else ()
    pairs = []
    for mine, other in itertools.zip_longest(case.calls, theirs):
        same = mine is not None and other is not None and mine.prompt == other.prompt
        pairs.append(CallPair(mine.prompt if same and mine else None, mine, other))
    return tuple(pairs)


def filter_link(**filters: str | None) -> str:
    """A fragment the page's script applies on load: ``#variant=Q2_K&outcome=miss``."""
    return "#" + urlencode({k: v for k, v in filters.items() if v})


def flip_counts(row: Row, reference: str | None) -> str:
    """``3 vs F16, 1 vs baseline``: how many of a variant's cases flipped, against what."""
    flips = [f for g in row.groups.values() for f in g.flips]
    n_ref = sum(f.against == "reference" for f in flips)
    parts = [f"{n_ref} vs {reference or 'reference'}" if n_ref else "",
             f"{len(flips) - n_ref} vs baseline" if len(flips) > n_ref else ""]
    return ", ".join(p for p in parts if p)


def _num(value: float | int | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _accuracy(row: Row, group: str) -> str:
    """A group's accuracy as the terminal shows it: ``0.76 [0.58–0.88]`` or ``≤ 0.62``."""
    g = row.groups.get(group)
    if g is None:
        return "–"
    if g.no_verdict or g.accuracy is None:
        return "no verdict" if g.no_verdict else "n/a"
    if g.bound:  # decided early: the best the group could still reach, no interval
        return f"≤ {g.accuracy:.2f}"
    return f"{g.accuracy:.2f}" + (f" [{g.ci[0]:.2f}–{g.ci[1]:.2f}]" if g.ci else "")


def _finalize(value: Any) -> Markup:
    """Every ``{{ }}`` value: escaped (Markup, e.g. the chart, is kept), then defanged."""
    return Markup(_HTTP.sub(lambda m: f"&#{ord(m.group())};", str(escape(value))))


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_quantgate", "templates"),
        autoescape=True,  # select_autoescape() would not match the .j2 suffix
        undefined=jinja2.StrictUndefined,  # a typo in the template fails, not renders blank
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, percent=_percent)
    env.globals.update(accuracy=_accuracy, filter_link=filter_link, flip_counts=flip_counts)
    return env.get_template("report.html.j2")
