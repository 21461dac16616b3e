"""Baselines through the flags: bless with --quant-update-baseline, then a case that passed
before and misses now fails the verdict naming it, unless max_accuracy_drop allows it; a -k
subset bless keeps the cases it did not run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .fake_project import FakeProject, echo_cases


def blessed_cases(fake: FakeProject, variant: str = "Q8_0") -> dict[str, str]:
    data: dict[str, Any] = json.loads((fake.path / "quantgate-baseline.json").read_text())
    cases: dict[str, str] = data["variants"][variant]["groups"]["test_qa.py"]["cases"]
    return cases


@pytest.fixture
def blessed(fake: FakeProject) -> FakeProject:
    fake.config(["Q8_0", "Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"))
    result = fake.run("--quant-update-baseline")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"baseline written: {fake.path / 'quantgate-baseline.json'}"])
    assert blessed_cases(fake) == {f"test_qa.py::test_echo[{w}]": "passed"
                                   for w in ("alpha", "beta", "delta", "gamma")}
    return fake


def test_unchanged_results_pass_against_the_baseline(blessed: FakeProject) -> None:
    result, report = blessed.run_report()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["baseline: same setup"])
    b = report["variants"][0]["groups"]["test_qa.py"]["baseline"]
    assert (b["common"], b["regressions"], b["fixes"], b["drop"]) == (4, [], [], 0)


def test_a_case_that_passed_before_and_misses_now_fails_the_verdict(blessed: FakeProject) -> None:
    blessed.script(wrong={"Q8_0": {"beta": "b"}})
    result, report = blessed.run_report("-rf")
    # 0.75 still meets accuracy=0.5: only the baseline comparison fails it
    result.stdout.fnmatch_lines([
        "accuracy fell 0.25 > 0.00 vs baseline (1.00 -> 0.75 on 4 cases); regressed: beta",
    ])
    result.stdout.fnmatch_lines(["Q8_0 test_qa.py vs baseline: 1 regressed (beta); McNemar p=1, within noise"])
    q8 = next(v for v in report["variants"] if v["name"] == "Q8_0")
    assert q8["groups"]["test_qa.py"]["baseline"]["regressions"] == ["test_qa.py::test_echo[beta]"]
    assert q8["passed"] is False and report["smallest_passing"] == "Q2_K"
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_max_accuracy_drop_tolerates_the_regression(blessed: FakeProject) -> None:
    blessed.script(wrong={"Q8_0": {"beta": "b"}})
    blessed.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5, max_accuracy_drop=0.25"))
    result, report = blessed.run_report()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["Q8_0 test_qa.py vs baseline: 1 regressed (beta); *"])
    assert all(v["passed"] for v in report["variants"])
    # a second regression is past what it allows
    blessed.script(wrong={"Q8_0": {"beta": "b", "gamma": "g"}})
    result = blessed.run()
    result.stdout.fnmatch_lines(["accuracy fell 0.50 > 0.25 vs baseline (1.00 -> 0.50 on 4 cases); regressed: beta, gamma"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_k_subset_bless_keeps_the_other_cases_and_checks_them_later(blessed: FakeProject) -> None:
    blessed.script(wrong={"Q8_0": {"beta": "b", "gamma": "g"}})
    result = blessed.run("--quant-update-baseline", "-k", "alpha or beta")
    assert result.ret == pytest.ExitCode.OK
    # beta's new outcome is blessed; gamma and delta did not run and are kept
    assert blessed_cases(blessed) == {
        "test_qa.py::test_echo[alpha]": "passed", "test_qa.py::test_echo[beta]": "miss",
        "test_qa.py::test_echo[delta]": "passed", "test_qa.py::test_echo[gamma]": "passed",
    }
    assert set(blessed_cases(blessed, "Q2_K")) == set(blessed_cases(blessed))
    # the full run compares every case: gamma regressed, beta was blessed as a miss
    result, report = blessed.run_report()
    result.stdout.fnmatch_lines(["*accuracy fell 0.25 > 0.00 vs baseline (0.75 -> 0.50 on 4 cases); regressed: gamma"])
    q8 = next(v for v in report["variants"] if v["name"] == "Q8_0")
    assert q8["groups"]["test_qa.py"]["baseline"]["regressions"] == ["test_qa.py::test_echo[gamma]"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_baseline_flag_names_another_file(blessed: FakeProject) -> None:
    other = blessed.path / "ci" / "other-baseline.json"
    result = blessed.run(f"--quant-baseline={other}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --quant-baseline: {other}: no such file; create it with --quant-update-baseline"])
    blessed.script(wrong={"Q8_0": {"beta": "b"}})
    assert blessed.run(f"--quant-baseline={other}", "--quant-update-baseline").ret == pytest.ExitCode.OK
    assert other.is_file()
    # compared with the new file (beta blessed as a miss), nothing regressed
    assert blessed.run(f"--quant-baseline={other}").ret == pytest.ExitCode.OK
    # the default one still says beta passed
    assert blessed.run().ret == pytest.ExitCode.TESTS_FAILED
