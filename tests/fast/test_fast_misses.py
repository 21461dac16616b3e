"""Misses: with an accuracy below 1 a failed assertion is XFAIL "quant miss: ..." and counts
against the accuracy; any other exception is an ordinary failure; without an accuracy (or
with accuracy 1) a failed assertion is an ordinary failure."""

from __future__ import annotations

import pytest

from .fake_project import FakeProject, dedent, echo_cases

CASES = dedent("""
    import pytest
    from pytest_quantgate.checks import contains_any
    pytestmark = pytest.mark.quant_rubric({rubric})

    @pytest.mark.parametrize("word", ["alpha", "beta", "gamma", "delta"])
    def test_echo(quant_model, word):
        assert quant_model.generate(word) == word, f"expected {{word}}"

    def test_check(quant_model):
        assert contains_any(quant_model.chat("epsilon"), ["epsilon"])

    def test_bug(quant_model):
        if quant_model.name == "Q2_K":
            raise ValueError("a bug in the test, not a miss")
""")


def group(report: dict, variant: str, key: str = "test_m.py") -> dict:  # type: ignore[type-arg]
    row = next(v for v in report["variants"] if v["name"] == variant)
    return row["groups"][key]  # type: ignore[no-any-return]


def test_failed_assertions_are_misses_and_other_exceptions_are_failures(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong={"Q8_0": {"beta": "b"}, "Q2_K": {"gamma": "g", "epsilon": "e"}},
                raise_on={"Q2_K": ["delta"]})
    fake.pytester.makepyfile(test_m=CASES.format(rubric="accuracy=0.5"))
    result, report = fake.run_report("-rxf")
    result.assert_outcomes(passed=8, xfailed=3, failed=3)  # Q2_K's verdict fails too
    result.stdout.fnmatch_lines_random([
        "XFAIL test_m.py::test_echo[[]Q8_0-beta[]] - quant miss: expected beta",
        "XFAIL test_m.py::test_echo[[]Q2_K-gamma[]] - quant miss: expected gamma",
        # a check's reason is the miss's message
        "XFAIL test_m.py::test_check[[]Q2_K[]] - quant miss: assert none of [[]'epsilon'[]] in 'e'",
        "FAILED test_m.py::test_echo[[]Q2_K-delta[]] - RuntimeError: Q2_K broke on delta",
        "FAILED test_m.py::test_bug[[]Q2_K[]] - ValueError: a bug in the test, not a miss",
        "FAILED test_m.py::quant_rubric[[]Q2_K[]] - Failed: accuracy 0.33 < 0.50 (2/6 cases)",
    ])
    q8 = group(report, "Q8_0")
    assert (q8["cases"], q8["passed_cases"], q8["misses"], q8["failures"]) == (6, 5, 1, 0)
    assert q8["accuracy"] == pytest.approx(5 / 6) and q8["passed"] is True
    assert q8["case_outcomes"]["test_m.py::test_echo[Q8_0-beta]"] == "miss"
    q2 = group(report, "Q2_K")
    assert (q2["cases"], q2["passed_cases"], q2["misses"], q2["failures"]) == (6, 2, 2, 2)
    assert q2["case_outcomes"]["test_m.py::test_echo[Q2_K-delta]"] == "failed"
    assert q2["reasons"] == ["accuracy 0.33 < 0.50 (2/6 cases)"]
    # misses alone do not fail Q8_0; the failures fail Q2_K and the run
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["Q8_0"]["passed"] is True and rows["Q8_0"]["failed_tests"] == []
    assert rows["Q2_K"]["passed"] is False
    assert rows["Q2_K"]["failed_tests"] == ["test_m.py::test_echo[Q2_K-delta]", "test_m.py::test_bug[Q2_K]"]
    assert report["smallest_passing"] == "Q8_0"
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_misses_alone_do_not_fail_the_run(fake: FakeProject) -> None:
    fake.config(["Q8_0"])
    fake.script(wrong={"Q8_0": {"beta": "b"}})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.75"))
    result = fake.run()
    result.assert_outcomes(passed=4, xfailed=1)  # 3 cases and the verdict
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("rubric", ["disk_mb=10", "accuracy=1.0"])
def test_without_an_accuracy_below_1_a_failed_assertion_is_a_failure(fake: FakeProject, rubric: str) -> None:
    fake.config(["Q8_0"])
    fake.script(wrong={"Q8_0": {"beta": "b"}})
    fake.pytester.makepyfile(test_qa=echo_cases(rubric))
    result, report = fake.run_report("-rf")
    result.stdout.fnmatch_lines(["FAILED test_qa.py::test_echo[[]Q8_0-beta[]] - AssertionError: expected beta*"])
    verdict_passes = rubric == "disk_mb=10"
    result.assert_outcomes(passed=3 + verdict_passes, failed=2 - verdict_passes)
    g = report["variants"][0]["groups"]["test_qa.py"]
    assert (g["misses"], g["failures"], g["case_outcomes"]["test_qa.py::test_echo[Q8_0-beta]"]) == (0, 1, "failed")
    assert report["variants"][0]["passed"] is False and report["smallest_passing"] is None
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_variant_that_cannot_load_fails_every_group_with_the_cause(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(fail_load=["Q2_K"])
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"),
                             test_qb=echo_cases("accuracy=0.5"))
    result, report = fake.run_report("-rfE")
    cause = "could not load Q2_K (tiny-q2_k.gguf): ConnectionError: no server for Q2_K"
    result.assert_outcomes(passed=10, failed=2, errors=8)
    # the hook is asked once; the variant's other tests error with the same cause
    assert [e for e in fake.events() if e[0] == "load"] == [("load", "Q8_0"), ("load", "Q2_K")]
    q2 = next(v for v in report["variants"] if v["name"] == "Q2_K")
    assert q2["groups"]["test_qa.py"]["reasons"] == [cause]  # not "accuracy 0.00"
    assert q2["groups"]["test_qb.py"]["reasons"] == [cause]
    result.stdout.fnmatch_lines(["_*_ ERROR at setup of test_echo[[]Q2_K-alpha[]] _*_", cause])
    result.stdout.fnmatch_lines(["ERROR test_qa.py::test_echo[[]Q2_K-alpha[]] - Failed: could not load Q2_K*"])
    assert report["smallest_passing"] == "Q8_0"
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_backend_object_missing_a_loaded_model_field_is_a_load_failure(fake: FakeProject) -> None:
    fake.pytester.makeconftest(dedent("""
        class Bare:  # no crashed, no memory_bytes
            llm = None
            def complete(self, prompt, *, max_tokens, stop, params):
                raise AssertionError("never called")
            chat = complete
            def close(self):
                pass

        def pytest_quantgate_load_model(config, variant, llama_kwargs):
            return Bare()
    """))
    fake.config(["Q8_0"])
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"))
    result, report = fake.run_report()
    cause = ("could not load Q8_0: pytest_quantgate_load_model returned Bare, which lacks crashed, "
             "memory_bytes (see LoadedModel)")
    result.assert_outcomes(errors=4, failed=1)
    result.stdout.fnmatch_lines([cause])
    assert report["variants"][0]["groups"]["test_qa.py"]["reasons"] == [cause]


def test_a_failing_user_xfail_counts_as_a_miss(fake: FakeProject) -> None:
    """Left out, a failing @pytest.mark.xfail case could only raise the accuracy: 3 passing
    cases and 2 failing xfail cases used to give 1.00 against an accuracy of 0.75."""
    fake.config(["Q8_0"])
    fake.script(wrong={"Q8_0": {"delta": "d", "epsilon": "e"}})
    fake.pytester.makepyfile(test_x=dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.75)
        @pytest.mark.parametrize("word", ["alpha", "beta", "gamma",
                                          pytest.param("delta", marks=pytest.mark.xfail),
                                          pytest.param("epsilon", marks=pytest.mark.xfail)])
        def test_echo(quant_model, word):
            assert quant_model.generate(word) == word
    """))
    result, report = fake.run_report()
    g = group(report, "Q8_0", "test_x.py")
    assert (g["cases"], g["passed_cases"], g["misses"]) == (5, 3, 2)
    assert g["reasons"] == ["accuracy 0.60 < 0.75 (3/5 cases)"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
