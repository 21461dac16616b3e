"""``--quant-decide-early``: a (group, variant) stops once its accuracy threshold can no longer
be met; the verdicts are the same as a full run's."""

from __future__ import annotations

import pytest

from pytest_quantgate.judge import decided_early
from pytest_quantgate.records import CaseRecord
from pytest_quantgate.rubric import Rubric
from pytest_quantgate.stats import wilson

from .fake_project import FakeProject, dedent

CASES = dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric({rubric})

    @pytest.mark.parametrize("word", {words!r})
    def test_echo(quant_model, word):
        assert quant_model.generate(word) == word, f"expected {{word}}"
""")
WORDS = [f"w{i}" for i in range(10)]


def verdicts(report: dict) -> dict[str, tuple[bool, str | None]]:  # type: ignore[type-arg]
    """variant -> (passed, first reason's kind: the words before the first figure)."""
    out = {}
    for r in report["variants"]:
        g = r["groups"]["test_qa.py"]
        first = g["reasons"][0].split(" ")[0] if g["reasons"] else None
        out[r["name"]] = (g["passed"], first)
    return out


def test_a_decided_variant_skips_its_remaining_cases_with_the_same_verdict(fake: FakeProject) -> None:
    fake.config(["F16", "Q8_0", "Q2_K"], reference="F16")
    # accuracy 0.8 of 10 cases allows 2 misses: Q2_K misses w0, w1, w2 (decided at the third),
    # Q8_0 misses two (never decided, passes), F16 is the reference (never decided)
    fake.script(wrong={"Q2_K": {"w0": "x", "w1": "x", "w2": "x", "w5": "x"},
                       "Q8_0": {"w3": "x", "w9": "x"}, "F16": {w: "x" for w in WORDS[:5]}})
    fake.pytester.makepyfile(test_qa=CASES.format(rubric="accuracy=0.8", words=WORDS))
    full, full_report = fake.run_report()
    early, early_report = fake.run_report("--quant-decide-early", "-rs")
    assert verdicts(full_report) == verdicts(early_report)
    assert verdicts(early_report) == {"F16": (False, "accuracy"), "Q8_0": (True, None),
                                      "Q2_K": (False, "accuracy")}
    # the cases F16 and Q8_0 missed run first on Q2_K (w3 missed twice, then w1, w2, w4, w9):
    # w0 (the first, fixed) misses, w3 passes, w1 and w2 miss: decided after 4 cases
    early.stdout.fnmatch_lines(["SKIPPED [[]6[]] *: verdict decided: 3 misses > 2 allowed"])
    assert [e for e in fake.events() if e == ("call", "Q2_K")] == [("call", "Q2_K")] * 4
    q2 = next(r for r in early_report["variants"] if r["name"] == "Q2_K")["groups"]["test_qa.py"]
    assert (q2["undecided"], q2["cases"], q2["passed_cases"], q2["misses"]) == (6, 10, 7, 3)
    assert q2["accuracy"] == pytest.approx(0.7) and q2["accuracy_ci"] is None
    assert q2["reasons"] == ["accuracy <= 0.70 < 0.80 (at best 7/10 cases; 6 not run, verdict decided early)"]
    early.stdout.fnmatch_lines(["Q2_K *<= 0.70 FAIL*"])
    f16 = next(r for r in early_report["variants"] if r["name"] == "F16")["groups"]["test_qa.py"]
    assert f16["undecided"] == 0 and f16["cases"] == 10  # the reference runs every case


def test_lower_bound_rubrics_decide_on_the_wilson_bound(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script(wrong={"Q2_K": {"w0": "x"}})
    # with 10 cases, the lower bound of even 10/10 is 0.72 < 0.75: decided at the first miss
    fake.pytester.makepyfile(test_qa=CASES.format(rubric="accuracy=0.75, accuracy_bound='lower'",
                                                  words=WORDS))
    result, report = fake.run_report("--quant-decide-early", "-rs")
    result.stdout.fnmatch_lines(["SKIPPED [[]9[]] *: verdict decided: accuracy 0.75 cannot be met by 10 cases"])
    _, full = fake.run_report()
    assert verdicts(report) == verdicts(full) == {"Q2_K": (False, "accuracy")}


def test_a_refused_variant_skips_the_rest_and_keeps_its_cause_first(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(fail_load=["Q2_K"])
    fake.pytester.makepyfile(test_qa=CASES.format(rubric="accuracy=0.5", words=WORDS[:4]))
    _, full = fake.run_report()
    result, early = fake.run_report("--quant-decide-early", "-rs")
    result.stdout.fnmatch_lines(["SKIPPED [[]3[]] *: verdict decided: could not load Q2_K *ConnectionError*"])
    for report in (full, early):
        q2 = next(r for r in report["variants"] if r["name"] == "Q2_K")["groups"]["test_qa.py"]
        assert q2["reasons"][0].startswith("could not load Q2_K (tiny-q2_k.gguf): ConnectionError")
        assert q2["passed"] is False


def test_never_while_updating_the_baseline(fake: FakeProject) -> None:
    fake.config(["Q2_K"], decide_early=True)
    fake.script(wrong={"Q2_K": {w: "x" for w in WORDS[:4]}})
    fake.pytester.makepyfile(test_qa=CASES.format(rubric="accuracy=0.9", words=WORDS))
    result = fake.run()
    result.assert_outcomes(xfailed=2, skipped=8, failed=1)  # the config key turns it on
    result = fake.run("--quant-update-baseline")
    result.assert_outcomes(passed=6, xfailed=4, failed=1)  # every case runs: a baseline needs them


def test_the_best_case_bounds_only_fall_with_misses() -> None:
    """What ``decided_early`` rests on: an extra pass never lowers a Wilson bound, an extra
    miss never raises one (checked over every outcome of up to 300 cases)."""
    for n in range(1, 300):
        for p in range(n + 1):
            lo, hi = wilson(p, n)
            assert wilson(p + 1, n + 1)[0] >= lo - 1e-12 and wilson(p + 1, n + 1)[1] >= hi - 1e-12
            assert wilson(p, n + 1)[0] <= lo + 1e-12 and wilson(p, n + 1)[1] <= hi + 1e-12


def test_decided_early_counts_what_is_left() -> None:
    def rec(outcome: str) -> CaseRecord:
        return CaseRecord("t", "Q", "g", outcome)

    r = Rubric(accuracy=0.8)
    assert decided_early(r, [rec("miss")] * 2, 10) is None  # 8/10 is still possible
    assert decided_early(r, [rec("miss")] * 3, 10) == "verdict decided: 3 misses > 2 allowed"
    assert decided_early(r, [rec("miss"), rec("failed"), rec("error")], 10) == (
        "verdict decided: 3 misses and failures > 2 allowed")
    # a user's skip shrinks the group: 2 misses of 9 that can run is still 7/9 >= 0.8? no
    assert decided_early(r, [rec("skipped"), rec("miss"), rec("miss")], 10) is not None
    assert decided_early(Rubric(), [rec("miss")] * 10, 10) is None  # no accuracy: nothing to decide


def test_cases_that_missed_on_bigger_rungs_run_first(fake: FakeProject) -> None:
    """Q8_0 (run first) misses w7 and w9; on Q2_K those two run right after the first case, so
    its third miss (w5) decides it with two cases left; without the reordering the third
    miss would come last."""
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong={"Q8_0": {"w7": "x", "w9": "x"}, "Q2_K": {"w5": "x", "w7": "x", "w9": "x"}})
    fake.pytester.makepyfile(test_qa=CASES.format(rubric="accuracy=0.8", words=WORDS))
    result, report = fake.run_report("--quant-decide-early", "-rs")
    q2_calls = [line.split()[2] for line in (fake.path / "events.txt").read_text().splitlines()
                if line.startswith("call Q2_K")]
    assert q2_calls == ["w0", "w7", "w9", "w1", "w2", "w3", "w4", "w5"]
    result.stdout.fnmatch_lines(["SKIPPED [[]2[]] *: verdict decided: 3 misses > 2 allowed"])
    _, full = fake.run_report()
    assert verdicts(report) == verdicts(full) == {"Q8_0": (True, None), "Q2_K": (False, "accuracy")}
