"""The end of the session: the gate (all / any) and exit codes, the smallest passing variant
overall and per group, variants with no evidence, and the ``pytest_quantgate_summary`` hook."""

from __future__ import annotations

import pytest

from .fake_project import FakeProject, dedent, echo_cases

DISK = echo_cases("disk_mb=0.3")  # F16 (0.8 MB) and Q8_0 (0.4 MB) fail, Q4_K_M and Q2_K pass


def _comparable(report: dict) -> dict:  # type: ignore[type-arg]
    """The summary without measurements that differ from run to run."""
    return {"smallest_passing": report["smallest_passing"],
            "by_group": report["smallest_passing_by_group"],
            "rows": [(v["name"], v["passed"], v["reasons"]) for v in report["variants"]]}


def test_gate_any_changes_only_the_exit_code(fake: FakeProject) -> None:
    fake.config()
    fake.script()
    fake.pytester.makepyfile(test_qa=DISK)
    strict, strict_report = fake.run_report()
    lenient, lenient_report = fake.run_report("--quant-gate=any")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    assert lenient.ret == pytest.ExitCode.OK
    strict.assert_outcomes(passed=18, failed=2)
    lenient.assert_outcomes(passed=18, failed=2)
    assert _comparable(strict_report) == _comparable(lenient_report)
    assert strict_report["gate"] == "all" and lenient_report["gate"] == "any"
    assert lenient_report["smallest_passing"] == "Q2_K"


def test_gate_any_from_the_ini_file(fake: FakeProject) -> None:
    fake.config()
    fake.script()
    fake.pytester.makepyfile(test_qa=DISK)
    fake.pytester.makeini("[pytest]\nquant_gate = any\n")
    assert fake.run().ret == pytest.ExitCode.OK
    assert fake.run("--quant-gate=all").ret == pytest.ExitCode.TESTS_FAILED  # the flag wins


def test_gate_any_tolerates_failures_in_a_failing_variants_own_tests(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(raise_on={"Q2_K": ["beta"]})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"))
    result, report = fake.run_report("--quant-gate=any")
    result.assert_outcomes(passed=9, failed=1)
    assert report["smallest_passing"] == "Q8_0"
    assert result.ret == pytest.ExitCode.OK
    assert fake.run().ret == pytest.ExitCode.TESTS_FAILED


def test_gate_any_fails_when_no_variant_passes(fake: FakeProject) -> None:
    fake.config()
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases("disk_mb=0.05"))
    result = fake.run("--quant-gate=any")
    result.stdout.fnmatch_lines(["no variant passes the rubric"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("outside", [
    "def test_plain():\n    assert False, 'not about a variant'\n",
    "import pytest\n@pytest.fixture\ndef broken():\n    raise OSError('no fixture')\n"
    "def test_plain(broken):\n    pass\n",
    "import pytest\n@pytest.fixture\ndef broken():\n    yield\n    raise OSError('teardown')\n"
    "def test_plain(broken):\n    pass\n",
    "this is not python\n",
], ids=["failure", "fixture-error", "teardown-error", "collection-error"])
def test_gate_any_still_fails_on_a_failure_outside_variant_tests(fake: FakeProject, outside: str) -> None:
    fake.config()
    fake.script()
    fake.pytester.makepyfile(test_qa=DISK, test_other=outside)
    result, report = fake.run_report("--quant-gate=any", "--continue-on-collection-errors")
    assert report["smallest_passing"] == "Q2_K"  # a variant passes, and yet:
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_smallest_passing_overall_and_per_group(fake: FakeProject) -> None:
    fake.config()
    # Q2_K misses half of test_a; Q4_K_M misses half of test_b
    fake.script(wrong={"Q2_K": {"alpha": "x", "beta": "x"}, "Q4_K_M": {"gamma-b": "x", "delta-b": "x"}})
    fake.pytester.makepyfile(
        test_a=echo_cases("accuracy=0.75"),
        test_b=echo_cases("accuracy=0.75").replace('word", ["alpha", "beta", "gamma", "delta"]',
                                                   'word", ["alpha-b", "beta-b", "gamma-b", "delta-b"]'),
    )
    result, report = fake.run_report()
    assert report["smallest_passing"] == "Q8_0"
    assert report["smallest_passing_by_group"] == {"test_a.py": "Q4_K_M", "test_b.py": "Q2_K"}
    assert [v["name"] for v in report["variants"]] == ["Q2_K", "Q4_K_M", "Q8_0", "F16"]
    result.stdout.fnmatch_lines([
        "variant *disk MB*mem MB*load s*gen tok/s*test_a.py*test_b.py*verdict",
        "Q2_K *0.1 *0.50 [[]*[]] FAIL *1.00 [[]*[]] ok *FAIL: test_a.py: accuracy 0.50 < 0.75 (2/4 cases)",
        "Q4_K_M *0.2 *1.00 [[]*[]] ok *0.50 [[]*[]] FAIL *FAIL: test_b.py: accuracy 0.50 < 0.75 (2/4 cases)",
        "Q8_0 *0.4 *pass",
        "F16 *0.8 *pass",
        "smallest passing variant: Q8_0 (0.4 MB)",
        "  test_a.py: smallest passing Q4_K_M",
        "  test_b.py: smallest passing Q2_K",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_group_with_an_ordinary_failure_is_not_its_smallest_passing(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(raise_on={"Q2_K": ["beta"]})  # 3/4 still meets the accuracy, but it is a failure
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.75"))
    _, report = fake.run_report()
    q2 = next(v for v in report["variants"] if v["name"] == "Q2_K")
    assert q2["groups"]["test_qa.py"]["passed"] is True and q2["passed"] is False
    assert q2["reasons"] == ["1 test(s) failed: test_qa.py::test_echo[Q2_K-beta]"]
    assert report["smallest_passing"] == "Q8_0"
    assert report["smallest_passing_by_group"] == {"test_qa.py": "Q8_0"}


SKIPPING = dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

    @pytest.mark.parametrize("word", ["alpha", "beta", "gamma"])
    def test_echo(quant_model, word):
        if quant_model.name == "Q2_K":
            pytest.skip("no reference answers for Q2_K")
        assert quant_model.generate(word) == word
""")


@pytest.mark.parametrize("where", ["test", "load hook"])
def test_a_variant_whose_cases_all_skipped_has_no_verdict(fake: FakeProject, where: str) -> None:
    fake.config(["Q8_0", "Q4_K_M", "Q2_K"])
    fake.script(skip_load=["Q2_K"] if where == "load hook" else [])
    fake.pytester.makepyfile(test_qa=SKIPPING)
    result, report = fake.run_report("-rf")
    why = "no reference answers for Q2_K" if where == "test" else "Q2_K is not served here"
    result.stdout.fnmatch_lines_random([
        "FAILED test_qa.py::quant_rubric[[]Q2_K[]] - Failed: no verdict: *",
        f"no verdict: none of its 3 case(s) was evaluated on Q2_K, all skipped: *{why}",
        "Q2_K *0.1 *no verdict *FAIL: test_qa.py: no verdict: *",
        "smallest passing variant: Q4_K_M (0.2 MB)",
    ])
    q2 = report["variants"][0]
    assert q2["name"] == "Q2_K" and q2["passed"] is False
    group = q2["groups"]["test_qa.py"]
    assert group["no_verdict"] is True and group["passed"] is False and group["cases"] == 0
    [reason] = group["reasons"]
    assert reason.startswith("no verdict: none of its 3 case(s) was evaluated on Q2_K, all skipped: ")
    assert reason.endswith(why)
    assert report["smallest_passing"] == "Q4_K_M"
    assert report["smallest_passing_by_group"] == {"test_qa.py": "Q4_K_M"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # not even under --quant-gate=any can it be the passing variant
    fake.config(["Q2_K"])
    result, report = fake.run_report("--quant-gate=any")
    assert report["smallest_passing"] is None
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_the_summary_hook_is_called_once_with_the_summary(fake: FakeProject) -> None:
    fake.config()
    fake.script()
    fake.pytester.makepyfile(test_qa=DISK)
    _, report = fake.run_report()
    assert fake.summary_calls() == [{"smallest_passing": "Q2_K", "by_group": {"test_qa.py": "Q2_K"}}]
    assert report["smallest_passing"] == "Q2_K"


@pytest.mark.parametrize("gate", ["all", "any"])
def test_an_output_that_cannot_be_written_fails_the_run_under_either_gate(
        fake: FakeProject, monkeypatch: pytest.MonkeyPatch, gate: str) -> None:
    """At commit ea7c478 ``--quant-gate=any`` turned the lost output's exit code 1 back into
    0, since a variant passed."""
    fake.config(["Q8_0"])
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    step = fake.path / "missing" / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = fake.run(f"--quant-gate={gate}")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"ERROR: GITHUB_STEP_SUMMARY: cannot write {step}: No such file or directory"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_variant_with_no_evidence_never_passes_even_without_a_rubric(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(skip_load=["Q2_K"])  # never loaded, every test skipped
    fake.pytester.makepyfile(test_qa=echo_cases().replace(
        "pytestmark = pytest.mark.quant_rubric(accuracy=0.75)\n", ""))
    result, report = fake.run_report()
    result.assert_outcomes(passed=4, skipped=4)
    assert report["groups"] == []
    assert report["smallest_passing"] == "Q8_0"
