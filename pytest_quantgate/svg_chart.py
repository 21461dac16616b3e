"""The size-quality chart as inline SVG, drawn here rather than by a plotting library: a few
dozen points, bars and lines do not justify matplotlib or plotly (tens of MB, and plotly's
HTML loads its script from a CDN unless 3 MB of it is inlined), and the page must work offline.

Disk size (MB) on x, accuracy (0..1) on y; one series per eval group, each variant a point
with its 95% interval as a vertical bar; each group's accuracy threshold as a dashed line; the
smallest passing variant overall as a vertical line and per group as a ring. An accuracy that
is only an upper bound (the group was decided early) is a hollow point labelled "≤" and has no
bar: its interval would describe the cases that ran, not the group.

Pure: a Report view in, markup out; every text from the report is escaped here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import escape

from .report_view import Report, Row

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, and on white
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

WIDTH, HEIGHT = 1240, 540
LEFT, RIGHT, TOP, BOTTOM = 60, 190, 78, 96  # room for axes, threshold labels, variant names, legend
SPREAD_PX = 7  # horizontal offset between groups at one variant, so intervals do not overlap


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    px_lo: float
    px_hi: float

    def __call__(self, value: float) -> float:
        return self.px_lo + (value - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering lo..hi."""
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def _x_domain(sizes: list[float]) -> tuple[float, float]:
    lo, hi = min(sizes), max(sizes)
    pad = max((hi - lo) * 0.06, 5.0)
    return max(lo - pad, 0.0), hi + pad


def _spaced(ys: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Label positions near ``ys`` but at least ``gap`` apart, within lo..hi (same order)."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = list(ys)
    prev = lo - gap
    for i in order:
        out[i] = max(ys[i], prev + gap)
        prev = out[i]
    overflow = prev - hi
    if overflow > 0:
        for i in order:
            out[i] -= overflow
    return out


def _f(v: float) -> str:
    return f"{v:.1f}"


def render_chart(report: Report) -> str:
    """The chart's ``<svg>`` element, or a short note when no variant has an accuracy."""
    rows = [r for r in report.rows if any(g.accuracy is not None for g in r.groups.values())]
    if not rows:
        return '<p class="note">No eval group has an accuracy to chart.</p>'
    x = Scale(*_x_domain([r.size_mb for r in rows]), LEFT, WIDTH - RIGHT)
    y = Scale(0.0, 1.0, HEIGHT - BOTTOM, TOP)
    groups = [g for g in report.groups if any(g in r.groups for r in rows)]
    out: list[str] = [
        f'<svg id="chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="disk size against accuracy per eval group" font-family="system-ui, sans-serif" '
        f'font-size="12">'
    ]
    out += _axes(x, y, rows)
    out += _thresholds(report, groups, x, y)
    out += _smallest(report, x, y)
    for gi, g in enumerate(groups):
        out += _series(report, g, gi, len(groups), rows, x, y)
    out += _legend(report, groups)
    out.append("</svg>")
    return "\n".join(out)


def _axes(x: Scale, y: Scale, rows: list[Row]) -> list[str]:
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
           f'fill="#fff" stroke="#bbb"/>']
    for t in [i / 5 for i in range(6)]:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y(t))}" y2="{_f(y(t))}" '
                   f'stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 8}" y="{_f(y(t) + 4)}" text-anchor="end" fill="#444">{t:.1f}</text>')
    for t in nice_ticks(x.lo, x.hi):
        out.append(f'<line x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 5}" '
                   f'stroke="#888"/>')
        out.append(f'<text x="{_f(x(t))}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" fill="#444">{t:g}</text>')
    out.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - BOTTOM + 38}" text-anchor="middle" '
               f'fill="#222">disk size (MB)</text>')
    out.append(f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
               f'text-anchor="middle" fill="#222">accuracy</text>')
    for r in rows:
        px = _f(x(r.size_mb))
        out.append(f'<line class="variant-line" x1="{px}" x2="{px}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                   f'stroke="#f0f0f0"/>')
        out.append(f'<text class="variant-label" transform="translate({px} {TOP - 6}) rotate(-40)" '
                   f'fill="#333">{escape(r.name)}</text>')
    return out


def _thresholds(report: Report, groups: list[str], x: Scale, y: Scale) -> list[str]:
    lines = []
    for gi, g in enumerate(groups):
        t = next((r.groups[g].threshold for r in report.rows
                  if g in r.groups and r.groups[g].threshold is not None), None)
        if t is not None and 0.0 <= t <= 1.0:
            lines.append((gi, g, t))
    labels = _spaced([y(t) + 4 for _, _, t in lines], 14, TOP + 4, HEIGHT - BOTTOM)
    out = []
    for (gi, g, t), ly in zip(lines, labels, strict=True):
        c = colour(gi)
        out.append(f'<line class="threshold" data-group="{escape(g)}" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                   f'y1="{_f(y(t))}" y2="{_f(y(t))}" stroke="{c}" stroke-width="1.5" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 6}" y="{_f(ly)}" fill="{c}">'
                   f'{escape(_short(report.label(g)))} ≥ {t:.2f}</text>')
    return out


def _smallest(report: Report, x: Scale, y: Scale) -> list[str]:
    best = report.row(report.smallest_passing)
    if best is None:
        return []
    px = _f(x(best.size_mb))
    return [f'<line class="smallest" x1="{px}" x2="{px}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#222" '
            f'stroke-width="1.5" stroke-dasharray="2 3"/>',
            f'<text x="{px}" y="{HEIGHT - BOTTOM - 6}" dx="4" fill="#222" font-weight="600">'
            f'smallest passing: {escape(best.name)}</text>']


def _series(report: Report, g: str, gi: int, n: int, rows: list[Row], x: Scale, y: Scale) -> list[str]:
    c = colour(gi)
    dx = (gi - (n - 1) / 2) * SPREAD_PX
    label = escape(report.label(g))
    points: list[tuple[float, float]] = []
    marks: list[str] = []
    for r in rows:
        gr = r.groups.get(g)
        if gr is None or gr.accuracy is None:
            continue
        px, py = x(r.size_mb) + dx, y(min(max(gr.accuracy, 0.0), 1.0))
        points.append((px, py))
        what = f"{escape(r.name)} · {label}: "
        if gr.bound:
            what += f"≤ {gr.accuracy:.2f} (decided early, {gr.undecided} cases not run)"
        else:
            what += f"{gr.accuracy:.2f}" + (f" [{gr.ci[0]:.2f}–{gr.ci[1]:.2f}]" if gr.ci else "")
        what += f", {r.size_mb:.1f} MB, {'pass' if gr.passed else 'fail'}"
        if gr.ci and not gr.bound:
            lo, hi = y(gr.ci[0]), y(gr.ci[1])
            marks.append(f'<path class="ci" d="M{_f(px)} {_f(lo)}V{_f(hi)}M{_f(px - 3)} {_f(lo)}h6'
                         f'M{_f(px - 3)} {_f(hi)}h6" stroke="{c}" stroke-width="1.5" fill="none"/>')
        if report.smallest_by_group.get(g) == r.name:
            marks.append(f'<circle class="smallest-ring" cx="{_f(px)}" cy="{_f(py)}" r="9" fill="none" '
                         f'stroke="{c}" stroke-width="1.5"/>')
        fill = "#fff" if gr.bound else c
        kind = "pt bound" if gr.bound else "pt"
        marks.append(f'<circle class="{kind}" data-variant="{escape(r.name)}" data-group="{escape(g)}" '
                     f'cx="{_f(px)}" cy="{_f(py)}" r="4.5" fill="{fill}" stroke="{c}" stroke-width="2">'
                     f'<title>{what}</title></circle>')
        if gr.bound:
            marks.append(f'<text class="bound-label" x="{_f(px - 7)}" y="{_f(py + 4)}" text-anchor="end" '
                         f'fill="{c}">≤</text>')
    path = " ".join(f"{_f(px)},{_f(py)}" for px, py in points)
    line = (f'<polyline class="series" data-group="{escape(g)}" points="{path}" fill="none" '
            f'stroke="{c}" stroke-opacity="0.45" stroke-width="1.5"/>')
    return [line, *marks]


def _legend(report: Report, groups: list[str]) -> list[str]:
    """Under the x axis: the groups' colours on one line, what the marks mean on the next."""
    ly = HEIGHT - 30
    out, cx = [], float(LEFT)
    for gi, g in enumerate(groups):
        name = _short(report.label(g))
        width = 28 + 6.5 * len(name)
        if cx + width > WIDTH and cx > LEFT:  # many groups: the rest go on the marks' line
            cx, ly = float(LEFT), ly + 16
        out.append(f'<circle cx="{_f(cx + 5)}" cy="{ly - 4}" r="4.5" fill="{colour(gi)}"/>')
        out.append(f'<text x="{_f(cx + 14)}" y="{ly}" fill="#222">{escape(name)}</text>')
        cx += width
    cx, ly = float(LEFT), ly + 18
    for text in ("● accuracy, bar: 95% interval", "○ ≤: upper bound (decided early)",
                 "ring: smallest passing in its group", "dotted: smallest passing overall",
                 "dashed: threshold"):
        out.append(f'<text x="{_f(cx)}" y="{ly}" fill="#555">{text}</text>')
        cx += 18 + 6.0 * len(text)
    return out


def _short(label: str, limit: int = 26) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
