"""The rubric marker, verdict tests, misses, the gate and the reports, on the real ladder."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import pytest

from quantgate_project import Project

# Deterministic levers: disk sizes are fixed by the files (F16 270.9, Q8_0 144.8, Q4_K_M 105.5,
# Q2_K 88.2 MB), so a disk_mb ceiling decides verdicts without depending on model answers.
TWO_GROUPS = """
import pytest

class TestSmall:
    pytestmark = pytest.mark.quant_rubric(disk_mb=120)
    def test_count(self, quant_model):
        assert quant_model.generate("1, 2, 3, 4,", max_tokens=4)

@pytest.mark.quant_rubric(disk_mb=200, tokens_per_second=1)
@pytest.mark.parametrize("n", [1, 2])
def test_words(quant_model, n):
    assert quant_model.chat("Say hello.", max_tokens=8)
"""


def verdict_lines(result: pytest.RunResult) -> dict[str, str]:
    out = {}
    for line in result.outlines:
        if "quant_rubric[" in line and (" PASSED" in line or " FAILED" in line):
            out[line.split(" ")[0]] = "PASSED" if " PASSED" in line else "FAILED"
    return out


def test_class_and_function_groups_get_verdict_tests(project: Project) -> None:
    project.config(["F16", "Q8_0", "Q4_K_M"])
    project.pytester.makepyfile(test_two=TWO_GROUPS)
    result, report = project.run_report("-v")
    assert verdict_lines(result) == {
        "test_two.py::TestSmall::quant_rubric[F16]": "FAILED",
        "test_two.py::test_words::quant_rubric[F16]": "FAILED",
        "test_two.py::TestSmall::quant_rubric[Q8_0]": "FAILED",
        "test_two.py::test_words::quant_rubric[Q8_0]": "PASSED",
        "test_two.py::TestSmall::quant_rubric[Q4_K_M]": "PASSED",
        "test_two.py::test_words::quant_rubric[Q4_K_M]": "PASSED",
    }
    # one line per miss, measured against required
    result.stdout.fnmatch_lines(["*disk 270.9 MB > 120 MB*", "*disk 270.9 MB > 200 MB*"])
    result.assert_outcomes(passed=12, failed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*= quantgate =*",
        "variant *disk MB*mem MB*load s*gen tok/s*test_two.py::TestSmall*test_two.py::test_words*verdict",
        "Q4_K_M *105.5 *pass",
        "Q8_0 *144.8 *FAIL: test_two.py::TestSmall: disk 144.8 MB > 120 MB",
        "F16 *270.9 *FAIL: test_two.py::TestSmall: disk 270.9 MB > 120 MB",
        "smallest passing variant: Q4_K_M (105.5 MB)",
        "  test_two.py::TestSmall: smallest passing Q4_K_M",
        "  test_two.py::test_words: smallest passing Q4_K_M",
    ])
    assert report["smallest_passing"] == "Q4_K_M"
    assert report["smallest_passing_by_group"] == {
        "test_two.py::TestSmall": "Q4_K_M", "test_two.py::test_words": "Q4_K_M"}


def test_gate_any_changes_only_the_exit_code(project: Project) -> None:
    project.config(["F16", "Q4_K_M"])
    project.pytester.makepyfile(test_two=TWO_GROUPS)
    strict, strict_report = project.run_report()
    lenient, lenient_report = project.run_report("--quant-gate=any")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    assert lenient.ret == pytest.ExitCode.OK

    def table(r: pytest.RunResult) -> list[str]:
        lines = r.outlines
        start = next(i for i, line in enumerate(lines) if "= quantgate =" in line)
        # the speed and memory columns are measurements; compare everything else
        return [" ".join(line.split()[:2] + line.split()[5:]) for line in lines[start + 1:start + 5]]

    assert table(strict) == table(lenient)
    strict.assert_outcomes(passed=8, failed=2)
    lenient.assert_outcomes(passed=8, failed=2)
    assert strict_report["smallest_passing"] == lenient_report["smallest_passing"] == "Q4_K_M"
    # with no passing variant, any still fails
    project.pytester.makepyfile(test_two=TWO_GROUPS.replace("disk_mb=120", "disk_mb=50"))
    assert project.run("--quant-gate=any").ret == pytest.ExitCode.TESTS_FAILED


MISSES = """
import pytest
pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

@pytest.mark.parametrize("n", [1, 2, 3])
def test_case(quant_model, n):
    quant_model.generate("Hi", max_tokens=2)
    assert n != 3, "the third case is wrong on purpose"

def test_broken(quant_model):
    raise ValueError("a bug in the test, not a miss")
"""


def test_misses_are_xfail_errors_are_failures(project: Project) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(test_m=MISSES)
    result, report = project.run_report("-rxf")
    result.assert_outcomes(passed=3, xfailed=1, failed=1)
    result.stdout.fnmatch_lines([
        "XFAIL test_m.py::test_case[[]Q8_0-3[]] - quant miss: the third case is wrong on purpose",
        "FAILED test_m.py::test_broken[[]Q8_0[]] - ValueError: a bug in the test, not a miss",
    ])
    group = report["variants"][0]["groups"]["test_m.py"]
    assert (group["cases"], group["passed_cases"], group["misses"], group["failures"]) == (4, 2, 1, 1)
    assert group["accuracy"] == 0.5 and group["passed"] is True
    assert report["variants"][0]["passed"] is False  # the error still fails the variant
    assert report["smallest_passing"] is None
    result.stdout.fnmatch_lines(["no variant passes the rubric"])


def test_without_accuracy_a_failed_case_is_a_failure(project: Project) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(test_m=MISSES.replace("accuracy=0.5", "disk_mb=1000"))
    result = project.run()
    result.assert_outcomes(passed=3, failed=2)


@pytest.mark.parametrize("marker,message", [
    ("quant_rubric(acuracy=0.8)",
     "ERROR: test_bad.py::test_x[[]Q8_0[]]: quant_rubric: acuracy: unknown key; known keys: accuracy*"),
    ("quant_rubric(accuracy='high')",
     "ERROR: test_bad.py::test_x[[]Q8_0[]]: quant_rubric: accuracy: expected a number, got 'high'"),
    ("quant_rubric(memory_mb=0)",
     "ERROR: test_bad.py::test_x[[]Q8_0[]]: quant_rubric: memory_mb: expected a positive number, got 0"),
    ("quant_rubric(0.8)",
     "ERROR: test_bad.py::test_x[[]Q8_0[]]: quant_rubric: takes keyword arguments only, got (0.8,)"),
])
def test_bad_marker_is_a_usage_error(project: Project, marker: str, message: str) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(test_bad=f"import pytest\n@pytest.mark.{marker}\ndef test_x(quant_variant):\n    pass\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_yaml_rubric_defaults_apply_and_markers_override(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"], rubric={"disk_mb": 100})
    project.pytester.makepyfile(test_d=textwrap.dedent("""
        import pytest
        @pytest.mark.quant_rubric()
        def test_default(quant_variant):
            pass
        @pytest.mark.quant_rubric(disk_mb=150)
        def test_override(quant_variant):
            pass
    """))
    result = project.run("-v")
    assert verdict_lines(result) == {
        "test_d.py::test_default::quant_rubric[Q8_0]": "FAILED",
        "test_d.py::test_override::quant_rubric[Q8_0]": "PASSED",
        "test_d.py::test_default::quant_rubric[Q2_K]": "PASSED",
        "test_d.py::test_override::quant_rubric[Q2_K]": "PASSED",
    }


def test_junit_properties_and_github_step_summary(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.config(["Q4_K_M"])
    project.pytester.makepyfile(test_two=TWO_GROUPS)
    step = project.path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = project.run("--junitxml=junit.xml")
    result.assert_outcomes(passed=5)
    root = ET.parse(project.path / "junit.xml").getroot()
    props = {
        (f"{case.get('classname')}::{case.get('name')}", p.get("name")): p.get("value")
        for case in root.iter("testcase") for p in case.iter("property")
    }
    small = "test_two.TestSmall::quant_rubric[Q4_K_M]"
    words = "test_two.test_words::quant_rubric[Q4_K_M]"
    assert float(props[(small, "quantgate.disk_mb")]) == pytest.approx(105.5, abs=0.1), props.keys()
    assert float(props[(small, "quantgate.memory_mb")]) > 50
    assert float(props[(words, "quantgate.tokens_per_second")]) > 1
    md = step.read_text()
    assert "| **Q4_K_M** | 105.5 |" in md
    assert "**smallest passing variant: Q4_K_M (105.5 MB)**" in md


def test_example_facts_slice_low_rung_misses_high_rung_passes(project: Project) -> None:
    """The real thing: the example's factual slice, unmodified, on four rungs."""
    data = project.copy_example(["facts"])["facts"]
    project.config(["F16", "Q8_0", "Q4_K_M", "Q2_K"], reference="F16")
    result, report = project.run_report("-v", "-p", "no:randomly")
    need = data["rubric"]["accuracy"]
    verdicts = verdict_lines(result)
    by_name = {v["name"]: v for v in report["variants"]}
    for name, v in by_name.items():
        g = v["groups"]["test_facts.py"]
        outcomes = list(g["case_outcomes"].values())
        # the verdict agrees with the per-case results, counted independently here
        assert g["cases"] == len(outcomes) == len(data["cases"])
        acc = outcomes.count("passed") / len(outcomes)
        assert g["accuracy"] == pytest.approx(acc)
        assert g["passed"] is (acc >= need)
        assert verdicts[f"test_facts.py::quant_rubric[{name}]"] == ("PASSED" if acc >= need else "FAILED")
        assert "failed" not in outcomes and "error" not in outcomes  # misses are not failures
    assert by_name["Q2_K"]["groups"]["test_facts.py"]["passed"] is False
    assert by_name["Q8_0"]["groups"]["test_facts.py"]["passed"] is True
    passing = sorted((v["size_bytes"], n) for n, v in by_name.items() if v["passed"])
    assert report["smallest_passing"] == passing[0][1]
    result.stdout.fnmatch_lines([f"smallest passing variant: {passing[0][1]} (*"])

    # the same run restricted with --quant-variants names the smallest of what ran
    result2, report2 = project.run_report("--quant-variants=F16,Q2")
    assert [v["name"] for v in report2["variants"]] == ["Q2_K", "F16"]
    assert report2["smallest_passing"] == "F16"
    for v in report2["variants"]:  # greedy decoding: the same cases pass as in the full run
        assert v["groups"]["test_facts.py"]["case_outcomes"] == by_name[v["name"]]["groups"]["test_facts.py"]["case_outcomes"]


def test_report_matches_terminal(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"])
    project.pytester.makepyfile(test_two=TWO_GROUPS)
    result, report = project.run_report()
    rows = {line.split()[0]: line.split() for line in result.outlines if line.split()[:1] in (["Q8_0"], ["Q2_K"])}
    for v in report["variants"]:
        row = rows[v["name"]]
        assert row[1] == f"{v['size_bytes'] / 1e6:.1f}"
        assert row[2] == f"{v['memory_mb']:.1f}"
        assert row[3] == f"{v['load_seconds']:.2f}"
        assert row[4] == f"{v['tokens_per_second']:.1f}"
    env = report["environment"]
    assert env["llama_cpp_python"] and "CPU" in env["llama_cpp_system_info"] and env["threads"] == 2
    # strict JSON: json.loads reads NaN and Infinity back, but jq, JavaScript and most CI
    # tools reject them, so no figure may be one
    json.dumps(report, allow_nan=False)
