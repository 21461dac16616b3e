"""Per-case transcripts in the JSON report, flipped cases against the reference and the
baseline, and the Markdown that a CI step posts on a pull request."""

from __future__ import annotations

from typing import Any

from pytest_quantgate.render import COMMENT_LIMIT

from .fake_project import FakeProject, dedent, echo_cases


def cases(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    row = next(r for r in report["variants"] if r["name"] == name)
    return {c["key"]: c for c in row["cases"]}


def flips(report: dict[str, Any], name: str, group: str = "test_qa.py") -> list[dict[str, str]]:
    row = next(r for r in report["variants"] if r["name"] == name)
    return row["groups"][group]["flips"]  # type: ignore[no-any-return]


def test_every_call_is_in_the_report_with_its_case(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong={"Q2_K": {"gamma": "nope"}})
    fake.pytester.makepyfile(test_qa=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

        @pytest.mark.parametrize("word", ["alpha", "gamma"])
        def test_echo(quant_model, word):
            assert quant_model.generate(word) == word, f"expected {word}"

        def test_two_calls(quant_model):
            quant_model.chat("one", system="be brief")
            assert quant_model.generate("two") == "two"
    """))
    _, report = fake.run_report()
    got = cases(report, "Q2_K")
    gamma = got["test_qa.py::test_echo[gamma]"]
    assert (gamma["outcome"], gamma["message"], gamma["group"]) == ("miss", "expected gamma", "test_qa.py")
    assert gamma["calls"] == [{"op": "complete", "prompt": "gamma", "reply": "nope", "prompt_tokens": 5,
                               "completion_tokens": 10, "wall_seconds": 0.1, "finish_reason": "stop",
                               "cached": False}]
    two = got["test_qa.py::test_two_calls"]
    assert [(c["op"], c["prompt"], c["reply"]) for c in two["calls"]] == [
        ("chat", "system: be brief\nuser: one", "one"), ("complete", "two", "two")]


def test_transcripts_travel_under_xdist(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong={"Q2_K": {"beta": "b"}})
    fake.pytester.makepyfile(test_qa=echo_cases())
    _, report = fake.run_report("-n", "2", subprocess=True)
    assert cases(report, "Q2_K")["test_qa.py::test_echo[beta]"]["calls"][0]["reply"] == "b"
    assert cases(report, "Q8_0")["test_qa.py::test_echo[beta]"]["calls"][0]["reply"] == "beta"
    junit = fake.path / "junit.xml"
    fake.run("-n", "2", f"--junitxml={junit}")
    assert "reply" not in junit.read_text()  # transcripts stay out of JUnit properties


def test_flipped_cases_against_the_reference_and_the_baseline(fake: FakeProject) -> None:
    fake.config(["F16", "Q2_K"], reference="F16")
    fake.script(wrong={"Q2_K": {"gamma": "g"}, "F16": {"delta": "d"}})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"))
    result, report = fake.run_report("--quant-update-baseline")
    assert flips(report, "Q2_K") == [
        {"key": "test_qa.py::test_echo[gamma]", "against": "reference", "was": "passed", "now": "miss"},
        {"key": "test_qa.py::test_echo[delta]", "against": "reference", "was": "miss", "now": "passed"}]
    assert flips(report, "F16") == []  # the reference is not compared with itself
    result.stdout.fnmatch_lines(["Q2_K test_qa.py flipped vs F16: 1 lost (gamma); 1 gained (delta)"])
    # against the baseline: Q2_K now also misses alpha
    fake.script(wrong={"Q2_K": {"gamma": "g", "alpha": "a"}, "F16": {"delta": "d"}})
    _, report = fake.run_report()
    assert [f for f in flips(report, "Q2_K") if f["against"] == "baseline"] == [
        {"key": "test_qa.py::test_echo[alpha]", "against": "baseline", "was": "passed", "now": "miss"}]


def test_markdown_shows_both_answers_and_stays_under_the_comment_limit(fake: FakeProject) -> None:
    words = [f"w{i}" for i in range(400)]
    fake.config(["F16", "Q8_0", "Q2_K"], reference="F16")
    long = "<b>x</b> | " * 60  # 660 characters of markup that must stay text
    fake.script(wrong={"Q2_K": {w: long for w in words[::2]}, "Q8_0": {w: long for w in words[1::2]}})
    fake.pytester.makepyfile(test_qa=dedent(f"""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.1)

        @pytest.mark.parametrize("word", {words!r})
        def test_echo(quant_model, word):
            assert quant_model.generate(word) == word, f"expected {{word}}"
    """))
    md_path = fake.path / "comment.md"
    fake.run_report(f"--quant-markdown={md_path}")
    md = md_path.read_text()
    assert len(md) <= COMMENT_LIMIT
    assert md.startswith("### quantgate") and "smallest passing variant" in md
    assert "<details><summary><b>Q2_K</b> <code>test_qa.py</code>: 200 flipped (200 vs F16)</summary>" in md
    assert "| `w0` | F16 | passed | miss | &lt;b&gt;x&lt;/b&gt; \\| " in md  # escaped, truncated
    assert "<b>x</b>" not in md
    assert "more flipped case(s) not shown" in md
    # small enough: everything shown, no note
    fake.script(wrong={"Q2_K": {"w0": "nope"}})
    fake.run_report(f"--quant-markdown={md_path}")
    md = md_path.read_text()
    assert "| `w0` | F16 | passed | miss | nope | w0 |" in md and "not shown" not in md


def test_markdown_path_is_checked_like_the_report(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.pytester.makepyfile(test_qa=echo_cases())
    result = fake.run("--quant-markdown=quantgate.yaml")
    result.stderr.fnmatch_lines(["ERROR: --quant-markdown: quantgate.yaml is the quantgate config, an input "
                                 "of this run; write to another path"])
