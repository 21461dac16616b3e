"""The HTML report without a model or a browser: what the page holds for a synthetic report
(escaping, the chart's marks, transcripts beside the reference's, flips), older reports
without transcripts, bad input, and ``quantgate report``. test_html.py opens it in Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_quantgate.cli import main
from pytest_quantgate.html_report import render_html
from pytest_quantgate.report_view import ReportError

from .fake_project import FakeProject, dedent
from .html_samples import EVIL, VARIANTS, Elements, sample_report, without


def test_model_output_is_escaped_and_the_page_loads_nothing() -> None:
    html = render_html(sample_report())
    assert EVIL not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html  # shown, as text
    assert html.count("<script") == 1  # the page's own filter script, nothing else
    assert "http" not in html.lower()
    tags = Elements(html).tags
    assert not [a for _, a in tags if "src" in a or "href" in a and not a["href"].startswith("#")]
    assert not [t for t, _ in tags if t in ("link", "img", "iframe", "object", "embed")]


def test_a_url_in_a_reply_is_shown_but_never_spelled_http() -> None:
    """So that grepping the file for http finds real references only (there are none)."""
    report = sample_report()
    report["variants"][0]["cases"][0]["calls"][0]["reply"] = "See HTTPS://example.org and http://x.test"
    html = render_html(report)
    assert "http" not in html.lower()
    assert "&#72;TTPS://example.org" in html and "&#104;ttp://x.test" in html  # H and h as entities
    text = Elements(html).case_text
    assert any("See HTTPS://example.org and http://x.test" in t for t in text)  # a browser shows it


def test_template_has_no_network_reference() -> None:
    template = Path(__file__).parents[2] / "pytest_quantgate" / "templates" / "report.html.j2"
    text = template.read_text()
    assert "http" not in text.lower()
    assert not re.search(r"\b(src|href)\s*=\s*\"(?!#|\{\{)", text)
    assert "@import" not in text and "url(" not in text


def test_summary_table_chart_and_speed_for_every_variant() -> None:
    report = sample_report()
    page = Elements(render_html(report))
    assert [a["data-variant"] for a in page.find("tr", "variant")] == list(VARIANTS)
    # one point per (variant, group), each drawn with its interval except the bound
    points = page.find("circle", "pt")
    assert {(p["data-variant"], p["data-group"]) for p in points} == {
        (v, g) for v in VARIANTS for g in ("test_facts.py", "test_math.py")}
    assert len(page.find("path", "ci")) == len(points) - 1
    assert len(page.find("line", "threshold")) == 2
    assert len(page.find("line", "smallest")) == 1
    assert len(page.find("circle", "smallest-ring")) == 2  # Q4_K_M in each group
    assert len(page.find("polyline", "series")) == 2
    assert [a["data-variant"] for a in page.find("tr") if "data-variant" in a][3:6] == list(VARIANTS)  # speed


def test_threshold_lines_sit_at_their_accuracy() -> None:
    page = Elements(render_html(sample_report()))
    zero = float(page.find("line", "grid")[0]["y1"])  # gridlines from 0.0 up to 1.0
    one = float(page.find("line", "grid")[-1]["y1"])
    ys = {a["data-group"]: float(a["y1"]) for a in page.find("line", "threshold")}
    for group, accuracy in (("test_facts.py", 0.6), ("test_math.py", 0.9)):
        assert ys[group] == pytest.approx(zero + accuracy * (one - zero), abs=0.1)


def test_an_upper_bound_is_hollow_labelled_and_has_no_interval() -> None:
    html = render_html(sample_report())
    page = Elements(html)
    bound = page.find("circle", "bound")
    assert [(a["data-variant"], a["data-group"]) for a in bound] == [("Q2_K", "test_math.py")]
    assert bound[0]["fill"] == "#fff"
    assert len(page.find("text", "bound-label")) == 1
    assert "≤ 0.00" in html and "≤ 0.00 [" not in html  # the summary cell: a bound, no interval


def test_each_case_with_its_transcript_beside_the_references() -> None:
    page = Elements(render_html(sample_report()))
    cases = page.find("details", "case")
    assert len(cases) == 3 * 5
    i = next(i for i, c in enumerate(cases) if c["data-key"] == "test_facts.py::test_fact[capital-peru]"
             and c["data-variant"] == "Q2_K")
    text = page.case_text[i]
    assert "wrong answer to capital-peru from Q2_K" in text and "right answer to capital-peru from F16" in text
    assert text.count("question capital-peru?") == 1  # the same prompt, shown once
    assert "F16, the reference (passed)" in text and "passed → miss vs F16" in text
    ref = next(i for i, c in enumerate(cases) if c["data-variant"] == "F16")
    assert "the reference" not in page.case_text[ref]  # the reference's own cases stand alone


def test_flipped_cases_are_marked_for_the_filter() -> None:
    report = sample_report()
    page = Elements(render_html(report))
    for row in report["variants"]:
        flipped = {f["key"] for g in row["groups"].values() for f in g["flips"]}
        marked = {c["data-key"] for c in page.find("details", "case", data_variant=row["name"])
                  if c["data-flipped"] == "1"}
        assert marked == flipped
    assert marked == set() and len(flipped) == 0  # the reference (last) never flips against itself
    assert "4 vs F16" in render_html(report)  # the summary's count, linked to the filter


def test_filters_offer_every_variant_group_and_outcome() -> None:
    page = Elements(render_html(sample_report()))
    options = [a.get("value") for t, a in page.tags if t == "option"]
    assert {"test_facts.py", "test_math.py"} <= set(options)
    assert len(page.find("select")) == 3 and page.find("input", name="flipped")


def test_an_older_report_without_transcripts_flips_or_probe_renders_from_outcomes() -> None:
    old = without(sample_report(), "cases", "flips", "probe", "fidelity", "undecided", "live_calls",
                  "cached_calls", "size_mb", "accuracy_ci")
    html = render_html(old)
    page = Elements(html)
    assert len(page.find("details", "case")) == 15  # from each group's case_outcomes
    assert "no transcripts" in html and "Fidelity" not in html and "flipped only" in html
    assert not page.find("path", "ci") and not page.find("circle", "bound")
    assert "88.2" in html  # disk size from size_bytes


@pytest.mark.parametrize("report", [
    {"variants": []},
    {"variants": [{"name": "Q4_0"}]},
    {"variants": [{"name": "Q4_0", "groups": {"g": {}}}], "reference": "gone"},
    {"variants": [{"name": "Q4_0", "groups": {"g": {"accuracy": float("nan"), "accuracy_ci": [0.1, None]}}}]},
])
def test_sparse_reports_render(report: dict[str, Any]) -> None:
    html = render_html(report)
    assert "<html" in html and "http" not in html


@pytest.mark.parametrize("report,where", [
    ([], "report: expected an object, got list"),
    ({}, "variants: missing"),
    ({"variants": {"Q4_0": {}}}, "variants: expected a list"),
    ({"variants": [{"name": "A"}, {"name": "A"}]}, "a variant appears twice"),
    ({"variants": [{"name": 4}]}, "variants[0].name: expected a string, got int 4"),
    ({"variants": [{"name": "A", "memory_mb": "lots"}]}, "variants[0].memory_mb: expected a number or null"),
    ({"variants": [{"name": "A", "memory_mb": True}]}, "variants[0].memory_mb: expected a number"),
    ({"variants": [{"name": "A", "groups": {"g<b>": {"accuracy_ci": [1]}}}]},
     'variants[0].groups["g<b>"].accuracy_ci: expected [low, high], got list [1]'),
    ({"variants": [{"name": "A", "cases": [{"nodeid": "t", "outcome": "miss", "calls": [{"reply": 7}]}]}]},
     "variants[0].cases[0].calls[0].reply: expected a string, got int 7"),
    ({"variants": [{"name": "A", "groups": {"g": {"flips": [{"against": "reference"}]}}}]},
     'variants[0].groups["g"].flips[0].key: expected a string, got null'),
])
def test_a_report_of_the_wrong_shape_names_the_field(report: Any, where: str) -> None:
    with pytest.raises(ReportError) as err:
        render_html(report)
    assert where in str(err.value) and "\n" not in str(err.value)


def test_quantgate_report_renders_a_saved_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "quantgate.json"
    src.write_text(json.dumps(sample_report()))
    out = tmp_path / "site" / "report.html"
    assert main(["report", str(src), "--html", str(out)]) == 0
    assert out.read_text() == render_html(sample_report())
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left behind


def _with(path: list[Any], value: Any) -> bytes:
    """The sample report, one field replaced: ``_with(["variants", 0, "passed"], "yes")``."""
    report = sample_report()
    target = report
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(report).encode()


@pytest.mark.parametrize("content,message", [
    (None, "cannot read: No such file or directory"),
    (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2"),
    (b'{"variants": [{"name": "A", "memory_mb": NaN}]}', "invalid JSON: NaN is not JSON"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b"[1, 2]", "expected an object"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"variants": []}', "no schema or variants"),
    (_with(["variants", 0, "groups", "test_facts.py", "passed"], "yes"), "passed: expected bool, got 'yes'"),
    # what the merge's checks leave to the page: each call of a transcript
    (_with(["variants", 0, "cases", 0, "calls", 0, "reply"], 7),
     "variants[0].cases[0].calls[0].reply: expected a string, got int 7"),
])
def test_quantgate_report_refuses_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         content: bytes | None, message: str) -> None:
    src = tmp_path / "in.json"
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "report.html"
    assert main(["report", str(src), "--html", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"quantgate report: error: {src}: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_quantgate_report_will_not_overwrite_its_input_or_write_nowhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "quantgate.json"
    src.write_text(json.dumps(sample_report()))
    assert main(["report", str(src), "--html", str(src)]) == 2
    assert "is the report being rendered" in capsys.readouterr().err
    assert json.loads(src.read_text()) == sample_report()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(src), "--html", str(blocker / "report.html")]) == 2
    assert capsys.readouterr().err.startswith(f"quantgate report: error: --html: cannot write {blocker / 'report.html'}: ")


def test_the_plugins_own_report_renders_with_every_case_and_transcript(fake: FakeProject) -> None:
    """The report a run writes (fake backend): each variant and case on the page, and what the
    model answered beside what the reference answered; a reply with markup stays text."""
    fake.config(("F16", "Q2_K"), reference="F16")
    fake.script(wrong={"Q2_K": {"gamma": "<b>gamma?</b>"}})
    fake.pytester.makepyfile(test_qa=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

        @pytest.mark.parametrize("word", ["alpha", "beta", "gamma"])
        def test_echo(quant_model, word):
            assert quant_model.generate(word) == word
    """))
    _, report = fake.run_report()
    html = render_html(report)
    page = Elements(html)
    assert [a["data-variant"] for a in page.find("tr", "variant")] == ["Q2_K", "F16"]
    cases = page.find("details", "case")
    assert {(c["data-variant"], c["data-key"]) for c in cases} == {
        (v, f"test_qa.py::test_echo[{w}]") for v in ("F16", "Q2_K") for w in ("alpha", "beta", "gamma")}
    assert all(row.get("cases") for row in report["variants"]), "the report has no per-case transcripts"
    i = next(i for i, c in enumerate(cases) if c["data-variant"] == "Q2_K" and c["data-key"].endswith("[gamma]"))
    assert cases[i]["data-outcome"] == "miss" and cases[i]["data-flipped"] == "1"
    assert "<b>gamma?</b>" in page.case_text[i] and "<b>gamma" not in html  # shown as text
    assert "F16, the reference (passed)" in page.case_text[i]


def test_quant_html_writes_the_page_of_the_runs_own_report(fake: FakeProject) -> None:
    """--quant-html renders the same document the JSON report holds; both files get the mode
    an ordinary open() gives (mkstemp alone would leave them 0600, unreadable to a CI uploader)."""
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong={"Q2_K": {"beta": "<script>alert(1)</script>"}})
    fake.pytester.makepyfile(test_qa=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

        @pytest.mark.parametrize("word", ["alpha", "beta"])
        def test_echo(quant_model, word):
            assert quant_model.generate(word) == word
    """))
    page = fake.path / "out" / "report.html"
    _, report = fake.run_report(f"--quant-html={page}")
    html = page.read_text()
    assert html == render_html(json.loads((fake.path / "quantgate.json").read_text()))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "http" not in html
    umask = os.umask(0)
    os.umask(umask)
    for f in (page, fake.path / "quantgate.json"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    refused = fake.run("--quant-html=quantgate.yaml")
    refused.stderr.fnmatch_lines(["ERROR: --quant-html: quantgate.yaml is the quantgate config, an input of "
                                  "this run; write to another path"])
