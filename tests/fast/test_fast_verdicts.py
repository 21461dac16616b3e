"""Verdicts: module-, class- and function-level markers make eval groups; closer markers
override farther ones, which override ``rubric:`` in quantgate.yaml; a failing verdict lists
every missed threshold (accuracy, memory, disk, speed) measured against required."""

from __future__ import annotations

from typing import Any

import pytest

from .fake_project import FakeProject, dedent, run_order

# Each group asks its own prompts, so the fake can get one group wrong and not the others.
GROUPS = dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric(accuracy=0.75, disk_mb=0.5)

    @pytest.mark.parametrize("word", ["m1", "m2", "m3", "m4"])
    def test_mod(quant_model, word):
        assert quant_model.generate(word) == word

    class TestC:
        pytestmark = pytest.mark.quant_rubric(disk_mb=0.3)

        @pytest.mark.parametrize("word", ["c1", "c2", "c3", "c4"])
        def test_c(self, quant_model, word):
            assert quant_model.generate(word) == word

    @pytest.mark.quant_rubric(tokens_per_second=50)
    @pytest.mark.parametrize("word", ["f1", "f2", "f3", "f4"])
    def test_fn(quant_model, word):
        assert quant_model.chat(word) == word
""")

MOD, CLS, FN = "test_x.py", "test_x.py::TestC", "test_x.py::test_fn"
VERDICT_ID = {MOD: "test_x.py::quant_rubric[{}]", CLS: "test_x.py::TestC::quant_rubric[{}]",
              FN: "test_x.py::test_fn::quant_rubric[{}]"}

# (group, variant) -> the verdict's reasons. F16 (0.80 MB) reports 150 MB; Q8_0 is 0.40 MB;
# Q4_K_M misses two of TestC's four cases; Q2_K generates at 20 tok/s.
EXPECTED: dict[tuple[str, str], list[str]] = {
    (MOD, "F16"): ["memory 150 MB > 100 MB", "disk 0.8 MB > 0.5 MB"],
    (CLS, "F16"): ["memory 150 MB > 100 MB", "disk 0.8 MB > 0.3 MB"],
    (FN, "F16"): ["memory 150 MB > 100 MB", "disk 0.8 MB > 0.5 MB"],
    (MOD, "Q8_0"): [],
    (CLS, "Q8_0"): ["disk 0.4 MB > 0.3 MB"],
    (FN, "Q8_0"): [],
    (MOD, "Q4_K_M"): [],
    (CLS, "Q4_K_M"): ["accuracy 0.50 < 0.75 (2/4 cases)"],
    (FN, "Q4_K_M"): [],
    (MOD, "Q2_K"): [],
    (CLS, "Q2_K"): [],
    (FN, "Q2_K"): ["speed 20.0 tok/s < 50 tok/s"],
}


@pytest.fixture
def judged(fake: FakeProject) -> tuple[pytest.RunResult, dict[str, Any]]:
    # yaml defaults: memory_mb applies everywhere, disk_mb is overridden by every group
    fake.config(rubric={"memory_mb": 100, "disk_mb": 0.05})
    fake.script(memory_mb={"F16": 150}, speed={"Q2_K": 20},
                wrong={"Q4_K_M": {"c1": "x", "c2": "y"}})
    fake.pytester.makepyfile(test_x=GROUPS)
    return fake.run_report("-v", "-rf")


def test_markers_on_module_class_and_function_form_groups_with_verdict_ids(
        judged: tuple[pytest.RunResult, dict[str, Any]]) -> None:
    result, report = judged
    verdicts = {nodeid: status for nodeid, status in run_order(result) if "quant_rubric[" in nodeid}
    assert verdicts == {VERDICT_ID[g].format(v): "FAILED" if reasons else "PASSED"
                        for (g, v), reasons in EXPECTED.items()}
    assert report["groups"] == [MOD, CLS, FN]
    assert report["group_labels"] == {MOD: MOD, CLS: CLS, FN: FN}


def test_closer_markers_override_farther_ones_and_the_yaml_defaults(
        judged: tuple[pytest.RunResult, dict[str, Any]]) -> None:
    _, report = judged
    for row in report["variants"]:
        assert row["groups"][MOD]["thresholds"] == {"accuracy": 0.75, "disk_mb": 0.5, "memory_mb": 100}
        assert row["groups"][CLS]["thresholds"] == {"accuracy": 0.75, "disk_mb": 0.3, "memory_mb": 100}
        assert row["groups"][FN]["thresholds"] == {"accuracy": 0.75, "disk_mb": 0.5, "memory_mb": 100,
                                                   "tokens_per_second": 50}


def test_a_failed_verdict_lists_every_missed_threshold(
        judged: tuple[pytest.RunResult, dict[str, Any]]) -> None:
    result, report = judged
    got = {(g, row["name"]): gr["reasons"] for row in report["variants"] for g, gr in row["groups"].items()}
    assert got == EXPECTED
    # the figures the reasons were computed from
    rows = {row["name"]: row for row in report["variants"]}
    assert rows["Q2_K"]["groups"][FN]["tokens_per_second"] == pytest.approx(20.0)
    assert rows["F16"]["memory_mb"] == pytest.approx(150.0)
    # the verdict test fails with one line per missed threshold
    result.stdout.fnmatch_lines([
        "_*_ TestC.quant_rubric[[]F16[]] _*_",
        "memory 150 MB > 100 MB",
        "disk 0.8 MB > 0.3 MB",
    ])
    result.stdout.fnmatch_lines_random([
        "FAILED test_x.py::TestC::quant_rubric[[]Q4_K_M[]] - Failed: accuracy 0.50 < 0.75*",
        "FAILED test_x.py::test_fn::quant_rubric[[]Q2_K[]] - Failed: speed 20.0 tok/s < 50*",
        "FAILED test_x.py::TestC::quant_rubric[[]Q8_0[]] - Failed: disk 0.4 MB > 0.3 MB",
    ])
    # each variant's verdict in the table is its first reason, prefixed with the group
    result.stdout.fnmatch_lines([
        "Q2_K *0.1 *FAIL: test_x.py::test_fn: speed 20.0 tok/s < 50 tok/s",
        "Q4_K_M *0.2 *FAIL: test_x.py::TestC: accuracy 0.50 < 0.75 (2/4 cases)",
        "Q8_0 *0.4 *FAIL: test_x.py::TestC: disk 0.4 MB > 0.3 MB",
        "F16 *0.8 *FAIL: test_x.py: memory 150 MB > 100 MB",
        "no variant passes the rubric",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
