"""accuracy_bound: judge accuracy by its point value, or by its 95% Wilson lower (strict) or
upper (lenient) bound; a change towards lenient is a loosened gate against the baseline."""

from __future__ import annotations

import textwrap

import pytest

from quantgate_project import Project

BODY = textwrap.dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric(accuracy={accuracy}, accuracy_bound="{bound}")
    @pytest.mark.parametrize("n", ["one", "two", "three", "four"])
    def test_case(quant_model, n):
        out = quant_model.generate("1, 2, 3,", max_tokens=2)
        assert n != "four", out  # three of four pass: accuracy 0.75 [0.30-0.95]
""")


@pytest.mark.parametrize("accuracy,bound,passes,first", [
    (0.7, "point", True, None),
    (0.7, "lower", False, "accuracy 0.75 [[]0.30-0.95[]]: lower bound 0.30 < 0.70 (accuracy_bound: lower, "
                          "3/4 cases; at 0.75 the bound clears 0.70 from * cases)"),
    (0.9, "point", False, "accuracy 0.75 < 0.90 (3/4 cases)"),
    (0.9, "upper", True, None),
])
def test_accuracy_bound_modes(project: Project, accuracy: float, bound: str, passes: bool,
                              first: str | None) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(test_b=BODY.format(accuracy=accuracy, bound=bound))
    result, report = project.run_report()
    assert report["variants"][0]["passed"] is passes
    if first is not None:
        result.stdout.fnmatch_lines([f"Q2_K * FAIL: test_b.py: {first}"])


def test_a_more_lenient_bound_is_a_loosened_gate(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(test_b=BODY.format(accuracy=0.2, bound="lower"))
    project.run("--quant-update-baseline").assert_outcomes(passed=4, xfailed=1)
    project.pytester.makepyfile(test_b=BODY.format(accuracy=0.2, bound="point"))
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["Q2_K * FAIL: test_b.py: the gate is looser than the baseline's: "
                                 "accuracy_bound lower -> point; re-bless*"])
