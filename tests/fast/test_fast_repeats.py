"""Repeats over the fake backend: each case runs once per repeat with seed + repeat, sampled
calls are decoded as one batch, greedy calls are made once, and the case's outcome comes from
its repeats' pass rate. The fake's sampled answer misses for scripted seeds, so every figure
below is known in advance."""

from __future__ import annotations

import math

import pytest

from pytest_quantgate.records import CaseRecord
from pytest_quantgate.repeats import aggregate, case_outcome, ks, pass_at_k, pass_hat_k, repeat_figures, without_repeat

from .fake_project import FakeProject, dedent, run_order

SAMPLED = dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric({rubric})

    @pytest.mark.parametrize("word", ["alpha", "beta"])
    def test_echo(quant_model, word):
        assert quant_model.generate(word, temperature=0.7) == word
""")


def sampled(rubric: str = "repeats=4, case_pass_rate=0.75") -> str:
    return SAMPLED.format(rubric=rubric)


def group(report: dict, variant: str) -> dict:  # type: ignore[type-arg]
    row = next(r for r in report["variants"] if r["name"] == variant)
    return row["groups"]["test_qa.py"]  # type: ignore[no-any-return]


def test_each_case_runs_once_per_repeat_and_is_judged_on_its_pass_rate(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    # Q2_K: alpha misses with seeds 1 (1 of 4: passes at 0.75), beta with seeds 0 and 2 (2 of 4)
    fake.script(wrong_seeds={"Q2_K": {"alpha": [1], "beta": [0, 2]}})
    fake.pytester.makepyfile(test_qa=sampled())
    result, report = fake.run_report("-v")
    result.stdout.fnmatch_lines(["*test_echo?Q2_K-alpha-rep0? PASSED*", "*test_echo?Q2_K-alpha-rep1? XFAIL*",
                                 "*test_echo?Q2_K-alpha-rep3? PASSED*"])
    q2 = group(report, "Q2_K")
    assert (q2["cases"], q2["passed_cases"], q2["passed"]) == (2, 1, False)
    assert q2["case_outcomes"] == {"test_qa.py::test_echo[Q2_K-alpha]": "passed",
                                   "test_qa.py::test_echo[Q2_K-beta]": "miss"}
    rep = q2["repeats"]
    assert rep["repeats"] == 4 and rep["mean_pass_rate"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert rep["pass_at_k"]["4"] == 1.0 and rep["pass_hat_k"]["4"] == 0.0
    assert rep["pass_at_k"]["1"] == pytest.approx(0.625) and rep["flaky_cases"] == 2
    assert q2["reasons"] == ["accuracy 0.50 < 1.00 (1/2 cases)"]
    cases = {c["key"]: c for c in next(r for r in report["variants"] if r["name"] == "Q2_K")["cases"]}
    assert cases["test_qa.py::test_echo[beta]"]["repeats"] == {
        "passed": 2, "ran": 4, "outcomes": ["miss", "passed", "miss", "passed"]}
    assert cases["test_qa.py::test_echo[beta]"]["message"].startswith("2/4 repeats passed; rep0: ")
    assert [c["seed"] for c in cases["test_qa.py::test_echo[beta]"]["calls"]] == [0, 1, 2, 3]
    assert group(report, "Q8_0")["passed"] is True
    # one batch per case and variant, four sequences each; no single sampled call
    events = fake.events()
    assert events.count(("batch", "Q2_K")) == 2 and events.count(("sequence", "Q2_K")) == 8
    assert ("call", "Q2_K") not in events
    result.stdout.fnmatch_lines([
        "test_qa.py on Q2_K: 4 repeats, mean pass rate 0.62 [[]*]; pass@1 0.62, pass@2 *, pass@4 1.00; "
        "pass^2 *, pass^4 0.00; a case passes at >= 0.75 of its repeats; 2 of 2 cases flaky",
        "Q2_K batched repeats: 2 decodes, 8 sequences, 80.0 tok/s over all sequences together*"])


def test_greedy_calls_are_made_once_for_all_repeats(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(repeats=3)

        def test_echo(quant_model, quant_repeat):
            assert quant_model.generate("alpha") == "alpha"
            assert quant_model.generate("beta", temperature=0.0) == "beta"
    """))
    result, report = fake.run_report("-v")
    assert result.ret == 0
    assert [e for e in fake.events() if e[0] in ("call", "batch")] == [("call", "Q2_K")] * 2
    calls = next(r for r in report["variants"] if r["name"] == "Q2_K")["cases"][0]["calls"]
    assert [(c["repeat"], c["reused"]) for c in calls] == [(0, False), (0, False), (1, True), (1, True),
                                                          (2, True), (2, True)]


def test_a_subset_of_repeats_gets_the_full_runs_answers(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong_seeds={"Q2_K": {"alpha": [2]}})
    fake.pytester.makepyfile(test_qa=sampled())
    fake.run_report()
    full = {c["nodeid"]: c for c in next(r for r in fake.run_report()[1]["variants"])["cases"]}
    result = fake.run("-v", "-k", "rep2")
    # the subset still decodes the whole batch, so repeat 2 sees seed 2's answer and misses
    result.stdout.fnmatch_lines(["*test_echo?Q2_K-alpha-rep2? XFAIL*", "*test_echo?Q2_K-beta-rep2? PASSED*"])
    assert fake.events().count(("batch", "Q2_K")) == 2
    assert full["test_qa.py::test_echo[Q2_K-alpha]"]["repeats"]["outcomes"] == ["passed", "passed", "miss", "passed"]
    # ... but a case is never judged on part of its repeats: beta's one passing repeat is no pass
    result.stdout.fnmatch_lines(["*no verdict: none of its 2 case(s) was evaluated on Q2_K, all skipped: "
                                 "only 1 of 4 repeats ran in this run; a case is judged on all of them*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_loosening_a_repeats_gate_is_caught_against_the_baseline(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=sampled("repeats=4"))
    assert fake.run("--quant-update-baseline").ret == 0
    fake.pytester.makepyfile(test_qa=sampled("repeats=4, case_pass_rate=0.25, accuracy=0.5"))
    result = fake.run()
    result.stdout.fnmatch_lines(["*the gate is looser than the baseline's: accuracy 1 -> 0.5, "
                                 "case_pass_rate 1 -> 0.25; re-bless*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "one by one"])
def test_a_cached_rerun_loads_nothing_and_counts_each_answer_once(fake: FakeProject, batch: bool) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong_seeds={"Q2_K": {"beta": [1]}}, batch=batch)
    fake.pytester.makepyfile(test_qa=sampled())
    fake.cache = True
    cache = f"--quant-cache={fake.path / 'results'}"
    _, first = fake.run_report(cache)
    result, again = fake.run_report(cache)
    assert fake.events() == []  # not loaded: every answer came from the cache
    row = next(r for r in again["variants"])
    assert (row["cached_calls"], row["live_calls"], row["reused_calls"]) == (8, 0, 0)
    assert group(first, "Q2_K")["case_outcomes"] == group(again, "Q2_K")["case_outcomes"]
    result.stdout.fnmatch_lines(["result cache: 8 of 8 calls answered from the cache (Q2_K 8/8 (not loaded))"])


def test_a_follow_up_call_first_made_by_a_later_repeat_is_made_alone(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(repeats=4)

        def test_chat(quant_model, quant_repeat):
            first = quant_model.generate("alpha", temperature=0.7)
            assert quant_model.generate(f"{first}-{quant_repeat}", temperature=0.7) == f"alpha-{quant_repeat}"
    """))
    _, report = fake.run_report()
    events = fake.events()
    # repeat 0 batches both of its calls; repeats 1-3 reuse the first and make their own second alone
    assert (events.count(("batch", "Q2_K")), events.count(("sequence", "Q2_K")), events.count(("call", "Q2_K"))) == (
        2, 8, 3)
    assert group(report, "Q2_K")["passed"] is True


def test_without_a_batched_decode_each_repeat_is_called_with_its_seed(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong_seeds={"Q2_K": {"alpha": [3]}}, batch=False)
    fake.pytester.makepyfile(test_qa=sampled())
    _, report = fake.run_report()
    assert fake.events().count(("call", "Q2_K")) == 8
    assert group(report, "Q2_K")["case_outcomes"]["test_qa.py::test_echo[Q2_K-alpha]"] == "passed"
    assert group(report, "Q2_K")["repeats"]["mean_pass_rate"] == pytest.approx((3 / 4 + 1) / 2)


def test_bad_repeats_are_a_usage_error(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=sampled("repeats=2.5"))
    result = fake.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*quant_rubric: repeats: expected a whole number from 1 to 64, got 2.5"])


@pytest.mark.parametrize(("n", "c", "k"), [(8, 0, 1), (8, 8, 8), (8, 3, 2), (10, 7, 5), (4, 1, 4)])
def test_pass_at_k_and_pass_hat_k_match_brute_force_over_subsets(n: int, c: int, k: int) -> None:
    import itertools

    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_hat_k(n, c, k) == pytest.approx(sum(all(s) for s in subsets) / len(subsets))


def test_case_outcomes_and_figures_on_known_repeats() -> None:
    assert case_outcome(["passed", "miss", "passed", "passed"], 0.75) == "passed"
    assert case_outcome(["passed", "miss", "miss", "passed"], 0.75) == "miss"
    assert case_outcome(["passed", "error", "passed", "passed"], 0.5) == "error"
    assert case_outcome(["skipped", "skipped"], 0.5) == "skipped"
    assert ks(8) == [1, 2, 4, 8] and ks(5) == [1, 2, 4, 5] and ks(2) == [1, 2]
    assert without_repeat("t.py::f[Q2_K-a-rep3]", 3) == "t.py::f[Q2_K-a]"
    assert without_repeat("t.py::f[Q2_K-rep3]@Q2_K", 3) == "t.py::f[Q2_K]@Q2_K"
    recs = [CaseRecord(f"t.py::f[Q2_K-{w}-rep{r}]", "Q2_K", "g", o, repeat=r, pass_rate=0.5)
            for w, outs in (("a", "PPPP"), ("b", "PMMM"), ("c", "MMMM"))
            for r, o in enumerate("passed" if x == "P" else "miss" for x in outs)]
    cases = aggregate(recs)
    assert [(c.nodeid, c.outcome) for c in cases] == [("t.py::f[Q2_K-a]", "passed"), ("t.py::f[Q2_K-b]", "miss"),
                                                      ("t.py::f[Q2_K-c]", "miss")]
    fig = repeat_figures(cases, 4, 0.5)
    assert fig is not None
    assert fig["mean_pass_rate"] == pytest.approx(5 / 12) and fig["flaky_cases"] == 1
    assert fig["pass_at_k"]["1"] == pytest.approx(5 / 12)
    assert fig["pass_at_k"]["2"] == pytest.approx((1 + 0.5 + 0) / 3)  # b: 1 - C(3,2)/C(4,2)
    assert fig["pass_hat_k"]["4"] == pytest.approx(1 / 3)
    lo, hi = fig["pass_rate_ci"]
    assert 0 < lo < 5 / 12 < hi < 1 and not math.isnan(lo)


def test_under_xdist_the_controller_judges_repeats_like_a_plain_run(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong_seeds={"Q2_K": {"alpha": [1], "beta": [0, 2]}})
    fake.pytester.makepyfile(test_qa=sampled())
    _, plain = fake.run_report()
    result, dist = fake.run_report("-n", "2", subprocess=True)
    for name in ("Q8_0", "Q2_K"):
        a, b = group(plain, name), group(dist, name)
        assert (a["passed"], a["case_outcomes"], a["repeats"]) == (b["passed"], b["case_outcomes"], b["repeats"])
    assert group(dist, "Q2_K")["passed"] is False
    cases = {c["key"]: c["repeats"] for c in next(r for r in dist["variants"] if r["name"] == "Q2_K")["cases"]}
    assert cases["test_qa.py::test_echo[beta]"]["outcomes"] == ["miss", "passed", "miss", "passed"]


def test_the_html_page_says_which_repeat_and_seed_made_each_call(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong_seeds={"Q2_K": {"beta": [2]}})
    fake.pytester.makepyfile(test_qa=sampled())
    page = fake.path / "report.html"
    fake.run_report(f"--quant-html={page}")
    html = page.read_text()
    assert "3/4 repeats passed; rep2: " in html
    assert "rep2, seed 2, one of 4 parallel sequences" in html


def test_misses_first_keeps_a_cases_repeats_together(fake: FakeProject) -> None:
    """--quant-decide-early moves cases that missed on bigger rungs to the front of a run;
    a case's repeats move together, so each case is still decoded in one batch."""
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong_seeds={"Q8_0": {"beta": [0, 1, 2, 3]}, "Q2_K": {"beta": [0]}})
    fake.pytester.makepyfile(test_qa=sampled("repeats=4, case_pass_rate=0.5, accuracy=0.5"))
    result = fake.run("-v", "--quant-decide-early")
    q2 = [n for n, _ in run_order(result) if "Q2_K-" in n]
    cases = [n.split("[Q2_K-")[1].split("-rep")[0] for n in q2]
    # alpha's first repeat was already running when beta (missed on Q8_0) moved forward
    assert cases == ["alpha"] * 4 + ["beta"] * 4, q2
    assert fake.events().count(("batch", "Q2_K")) == 2  # one per case: never decoded twice
