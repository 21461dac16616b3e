"""The HTML report in a real browser (headless Chromium, Debian's package): the page paints,
its script keeps the chart and tables in the DOM, and filters from the URL fragment hide
exactly the cases that do not match; then the same for the report of a real run on the ladder.

Chromium is run as a plain command: ``--screenshot`` for pixels, ``--dump-dom`` for the DOM
after the page's script ran (``--virtual-time-budget`` lets it finish), so no DevTools client
is needed. CI installs it (.ci/run); missing, these tests fail rather than skip."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fast.html_samples import VARIANTS, Elements, sample_report
from pytest_quantgate.cli import main
from pytest_quantgate.html_report import render_html, write_html
from quantgate_project import Project, qa_module

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")
GROUP_COLOURS = ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00))  # svg_chart.PALETTE[:2]
BACKGROUND = (0xFA, 0xFA, 0xFA)


class Chromium:
    def __init__(self, exe: str, profile: Path) -> None:
        self.exe = exe
        self.profile = profile

    def run(self, page: Path, fragment: str, *args: str) -> bytes:
        cmd = [self.exe, *FLAGS, f"--user-data-dir={self.profile}", *args, page.as_uri() + fragment]
        done = subprocess.run(cmd, capture_output=True, timeout=20, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done.stdout

    def screenshot(self, page: Path, out: Path, size: str = "1400,2000") -> np.ndarray:
        self.run(page, "", f"--screenshot={out}", f"--window-size={size}")
        return read_png(out.read_bytes())

    def dom(self, page: Path, fragment: str = "") -> Elements:
        return Elements(self.run(page, fragment, "--virtual-time-budget=2000", "--dump-dom").decode())


@pytest.fixture
def chromium(tmp_path: Path) -> Chromium:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)", pytrace=False)
    return Chromium(exe, tmp_path / "chromium-profile")


def read_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB(A), non-interlaced PNG (what Chromium writes) as a (height, width, channels)
    array: numpy is already a dependency, an image library would be one just for this."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + n]
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + n])
        pos += 12 + n
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(height):  # undo each row's filter (PNG spec, section 9)
        start = y * (stride + 1)
        kind, line = raw[start], np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + prev) % 256
        else:  # Average, Paeth: each byte depends on the one just decoded
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur[i] = (cur[i] + ((a + up[i]) >> 1)) & 255
                    continue
                b, c = up[i], up[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.array(cur, dtype=np.int64)
        out[y] = row
        prev = row
    return out.reshape(height, width, bpp)[:, :, :3]


def colours(image: np.ndarray) -> set[tuple[int, int, int]]:
    return {(int(r), int(g), int(b)) for r, g, b in np.unique(image.reshape(-1, 3), axis=0)}


def assert_painted(image: np.ndarray, groups: int) -> None:
    """Drawn, not blank: the page's background, many colours, and each of the chart's series
    colours (solid point markers) on screen."""
    seen = colours(image)
    assert len(seen) > 50, f"only {len(seen)} colours: a blank or unstyled page"
    assert BACKGROUND in seen and all(c in seen for c in GROUP_COLOURS[:groups]), sorted(seen)[:20]
    assert (image == BACKGROUND).all(axis=2).mean() > 0.3  # the page's own background, not an error page


def visible(page: Elements) -> list[dict[str, str]]:
    return [c for c in page.find("details", "case") if "hidden" not in c]


@pytest.fixture
def sample_page(tmp_path: Path) -> Path:
    page = tmp_path / "report.html"
    write_html(page, sample_report())
    return page


def test_the_page_paints(chromium: Chromium, sample_page: Path, tmp_path: Path) -> None:
    image = chromium.screenshot(sample_page, tmp_path / "shot.png")
    assert image.shape == (2000, 1400, 3)
    assert_painted(image, groups=2)


def test_chart_and_tables_are_in_the_dom_after_scripts_ran(chromium: Chromium, sample_page: Path) -> None:
    page = chromium.dom(sample_page)
    assert len(page.find("svg", "chart")) == 1
    assert len(page.find("circle", "pt")) == len(VARIANTS) * 2
    assert len(page.find("path", "ci")) == len(VARIANTS) * 2 - 1  # the upper bound has no bar
    assert len(page.find("line", "threshold")) == 2
    assert [a["data-variant"] for a in page.find("tr", "variant")] == list(VARIANTS)
    assert len(visible(page)) == len(page.find("details", "case")) == 15  # no filter: all shown


@pytest.mark.parametrize("fragment,expected", [
    ("#variant=Q2_K&outcome=miss", lambda c: c["data-variant"] == "Q2_K" and c["data-outcome"] == "miss"),
    ("#group=test_math.py&outcome=passed", lambda c: c["data-group"] == "test_math.py"
     and c["data-outcome"] == "passed"),
    ("#flipped=1", lambda c: c["data-flipped"] == "1"),
    ("#variant=Q4_K_M&flipped=1", lambda c: c["data-variant"] == "Q4_K_M" and c["data-flipped"] == "1"),
])
def test_filters_from_the_url_fragment_hide_the_other_cases(chromium: Chromium, sample_page: Path,
                                                            fragment: str, expected: Any) -> None:
    page = chromium.dom(sample_page, fragment)
    cases = page.find("details", "case")
    shown = visible(page)
    assert shown == [c for c in cases if expected(c)]
    assert 0 < len(shown) < len(cases)


def test_a_real_run_renders_every_variant_case_and_transcript(project: Project, chromium: Chromium,
                                                              tmp_path: Path) -> None:
    """The report of a real run on two rungs: `quantgate report` renders it; the page has each
    variant and case, what each model said, nothing that loads from the network, and opens,
    paints and filters in Chromium."""
    project.config(["F16", "Q2_K"], reference="F16", generation={"max_tokens": 12})
    project.pytester.makepyfile(test_qa=qa_module([
        ("What is the capital of France?", "paris"), ("What is 2 + 2?", "4"),
        ("What colour is the sky on a clear day?", "blue"),
        ("Which planet is the largest in our solar system?", "jupiter")]))
    _, report = project.run_report()
    saved = project.path / "quantgate.json"
    html_path = tmp_path / "real.html"
    assert main(["report", str(saved), "--html", str(html_path)]) == 0
    html = html_path.read_text()
    assert html == render_html(report)
    assert "http" not in html.lower()
    page = Elements(html)
    assert [a["data-variant"] for a in page.find("tr", "variant")] == ["Q2_K", "F16"]
    keys = {(c["data-variant"], c["data-key"]) for c in page.find("details", "case")}
    assert len(keys) == 8 and {v for v, _ in keys} == {"Q2_K", "F16"}
    # the transcripts: each case's calls, as the run recorded them, are on the page
    rows = {r["name"]: r for r in report["variants"]}
    assert all(len(r.get("cases", [])) == 4 for r in rows.values()), "the report has no per-case transcripts"
    for case in rows["Q2_K"]["cases"] + rows["F16"]["cases"]:
        (call,) = case["calls"]
        assert call["op"] == "chat" and call["completion_tokens"] >= 1
        assert call["reply"].strip() and call["prompt"].endswith("assistant\n")  # chat template applied
    q2 = page.find("details", "case", data_variant="Q2_K")
    for i, c in enumerate(page.find("details", "case")):
        if c["data-variant"] != "Q2_K":
            continue
        mine = next(x for x in rows["Q2_K"]["cases"] if x["key"] == c["data-key"])
        ref = next(x for x in rows["F16"]["cases"] if x["key"] == c["data-key"])
        text = page.case_text[i]
        assert mine["calls"][0]["reply"].strip() in text and ref["calls"][0]["reply"].strip() in text
        assert "F16, the reference" in text
    # in the browser: painted, and a filter leaves only that variant's cases
    image = chromium.screenshot(html_path, tmp_path / "real.png")
    assert_painted(image, groups=1)
    dom = chromium.dom(html_path, "#variant=Q2_K")
    assert len(dom.find("circle", "pt")) == 2 and len(dom.find("tr", "variant")) == 2
    assert [c["data-key"] for c in visible(dom)] == [c["data-key"] for c in q2]
