"""Baselines and paired comparisons on the real ladder: the pull-request workflow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from quantgate_project import Project

CASES = """
import pytest
pytestmark = pytest.mark.quant_rubric(accuracy=0.5)
ANSWERS = {"one": ("1, 2, 3, 4,", "5"), "two": ("a, b, c, d,", "e"), "three": ("Monday, Tuesday,", "wednesday")}

@pytest.mark.parametrize("key", sorted(ANSWERS))
def test_next(quant_model, key):
    prompt, expected = ANSWERS[key]
    assert expected in quant_model.generate(prompt, max_tokens=6).lower()
"""


def baseline(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project.path / "quantgate-baseline.json").read_text())
    return data


def group(report: dict[str, Any], variant: str, key: str) -> dict[str, Any]:
    v = [v for v in report["variants"] if v["name"] == variant][0]
    g: dict[str, Any] = v["groups"][key]
    return g


def test_update_then_rerun_has_no_flips_and_identical_outcomes(project: Project) -> None:
    project.config(["Q8_0", "Q4_K_M"])
    project.pytester.makepyfile(test_next=CASES)
    first = project.run("--quant-update-baseline")
    first.stdout.fnmatch_lines([f"baseline written: {project.path / 'quantgate-baseline.json'}"])
    written = baseline(project)
    assert set(written["variants"]) == {"Q8_0", "Q4_K_M"}
    assert set(written["variants"]["Q8_0"]["groups"]["test_next.py"]["cases"]) == {
        "test_next.py::test_next[one]", "test_next.py::test_next[three]", "test_next.py::test_next[two]"}
    import hashlib
    assert written["fingerprint"]["files"]["Q8_0"] == hashlib.sha256(project.ladder.files["Q8_0"].read_bytes()).hexdigest()
    text = (project.path / "quantgate-baseline.json").read_text()
    assert text == json.dumps(written, indent=1, sort_keys=True) + "\n"  # sorted, stable

    result, report = project.run_report()
    result.stdout.fnmatch_lines(["baseline: same setup"])
    assert "vs baseline" not in result.stdout.str()
    for v in ("Q8_0", "Q4_K_M"):
        b = group(report, v, "test_next.py")["baseline"]
        assert b["common"] == 3 and b["regressions"] == [] and b["fixes"] == [] and b["drop"] == 0
    assert report["baseline"]["changes"] == []

    # a second update from an unchanged setup records the same outcomes byte for byte
    project.run("--quant-update-baseline")
    again = baseline(project)
    for v in again["variants"]:
        assert again["variants"][v]["groups"] == written["variants"][v]["groups"]
    assert again["fingerprint"] == written["fingerprint"]


def test_changed_expected_answer_fails_the_verdict_naming_the_case(project: Project) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(test_next=CASES)
    project.run("--quant-update-baseline")
    before = baseline(project)["variants"]["Q8_0"]["groups"]["test_next.py"]["cases"]
    passing = sorted(k for k, o in before.items() if o == "passed")
    assert passing, before  # Q8_0 continues at least one sequence
    victim = passing[0].split("[")[1].rstrip("]")
    expected = {"one": '"5")', "two": '"e")', "three": '"wednesday")'}[victim]
    broken = CASES.replace(expected, '"never")')
    assert broken != CASES
    project.pytester.makepyfile(test_next=broken)
    result, report = project.run_report("-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"*accuracy fell 0.33 > 0.00 vs baseline (* on 3 cases); regressed: {victim}",
        f"Q8_0 test_next.py vs baseline: 1 regressed ({victim}); McNemar p=1, within noise",
    ])
    assert group(report, "Q8_0", "test_next.py")["baseline"]["regressions"] == [f"test_next.py::test_next[{victim}]"]


def test_swapped_file_is_reported_and_its_flips_fail_the_verdict(project: Project) -> None:
    project.copy_example(["facts"])
    project.config(["Q8_0"])
    project.run("--quant-update-baseline")
    # someone re-quantized "Q8_0" and the file is now really a Q2_K
    cfg = project.path / "quantgate.yaml"
    cfg.write_text(cfg.read_text().replace(str(project.ladder.files["Q8_0"]), str(project.ladder.files["Q2_K"])))
    result, report = project.run_report()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["baseline: Q8_0 file changed"])
    b = group(report, "Q8_0", "test_facts.py")["baseline"]
    assert b["regressions"] and b["drop"] > 0
    first = b["regressions"][0].split("[")[1].rstrip("]")
    result.stdout.fnmatch_lines([f"*accuracy fell * vs baseline *; regressed: {first}*"])


def test_llama_cpp_python_version_change_is_reported_but_compared(project: Project) -> None:
    project.config(["Q4_K_M"])
    project.pytester.makepyfile(test_next=CASES)
    project.run("--quant-update-baseline")
    path = project.path / "quantgate-baseline.json"
    data = json.loads(path.read_text())
    current = data["fingerprint"]["llama_cpp_python"]
    data["fingerprint"]["llama_cpp_python"] = "0.3.35"
    path.write_text(json.dumps(data))
    result, report = project.run_report()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"baseline: llama-cpp-python 0.3.35 -> {current}"])
    assert group(report, "Q4_K_M", "test_next.py")["baseline"]["common"] == 3


def test_nothing_comparable_refuses_with_how_to_update(project: Project) -> None:
    project.config(["Q4_K_M"])
    project.pytester.makepyfile(test_next=CASES)
    project.run("--quant-update-baseline")
    (project.path / "test_next.py").rename(project.path / "test_renamed.py")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: *quantgate-baseline.json: nothing in this run is comparable to the baseline (no variant "
        "and eval group in common); write a new one with pytest --quant-update-baseline"
    ])


def test_max_drop_vs_reference_fails_a_low_rung_and_passes_a_high_one(project: Project) -> None:
    project.copy_example(["facts"])
    project.config(["F16", "Q8_0", "Q2_K"], reference="F16", rubric={"max_drop_vs_reference": 0.05})
    result, report = project.run_report("-p", "no:randomly")
    q8 = group(report, "Q8_0", "test_facts.py")
    q2 = group(report, "Q2_K", "test_facts.py")
    for g in (q8, q2):
        ref = g["vs_reference"]
        assert ref["reference"] == "F16" and ref["cases"] == 28
        # recount the paired difference from the per-case outcomes in the report
        f16 = {k.replace("[F16-", "["): o for k, o in group(report, "F16", "test_facts.py")["case_outcomes"].items()}
        mine = {k.replace(f"[{g['variant']}-", "["): o for k, o in g["case_outcomes"].items()}
        lost = sum(f16[k] == "passed" and mine[k] != "passed" for k in f16)
        gained = sum(f16[k] != "passed" and mine[k] == "passed" for k in f16)
        assert (ref["lost"], ref["gained"]) == (lost, gained)
        assert ref["drop"] == pytest.approx((lost - gained) / 28)
    assert q8["passed"] is True and q2["passed"] is False
    result.stdout.fnmatch_lines([
        "*below reference F16 > 0.05 allowed (lost *, gained * of 28; exact McNemar p=*)*",
        "Q2_K test_facts.py vs F16: +0.* drop (lost *, gained *, McNemar p=*); too few cases: 28 cases "
        "cannot show a drop of 0.05 as significant",
    ])


def test_reference_not_selected_uses_the_baseline_or_says_why(project: Project) -> None:
    project.copy_example(["facts"])
    project.config(["F16", "Q2_K"], reference="F16", rubric={"max_drop_vs_reference": 0.05})
    result = project.run("--quant-variants=Q2")
    result.stdout.fnmatch_lines([
        "*max_drop_vs_reference: reference F16 did not run (select it with --quant-variants) and no "
        "baseline holds its results*"
    ])
    project.run("--quant-update-baseline")
    result2, report = project.run_report("--quant-variants=Q2")
    assert group(report, "Q2_K", "test_facts.py")["vs_reference"]["reference"] == "F16 (from the baseline)"


def test_subset_update_merges_and_case_set_changes_are_reported(project: Project) -> None:
    project.config(["Q8_0", "Q4_K_M"])
    project.pytester.makepyfile(test_next=CASES)
    project.run("--quant-update-baseline")
    # blessing only Q4_K_M must keep Q8_0's entry
    project.run("--quant-update-baseline", "--quant-variants=Q4")
    assert set(baseline(project)["variants"]) == {"Q8_0", "Q4_K_M"}
    # one case removed, one added: reported, left out of the comparison
    changed = CASES.replace('"three": ("Monday, Tuesday,", "wednesday")', '"four": ("x, y,", "z")')
    project.pytester.makepyfile(test_next=changed)
    result, report = project.run_report()
    result.stdout.fnmatch_lines(["baseline: test_next.py: case set changed",
                                 "Q8_0 test_next.py vs baseline: *1 new, 1 removed cases not compared*"])
    b = group(report, "Q8_0", "test_next.py")["baseline"]
    assert b["added"] == ["test_next.py::test_next[four]"] and b["removed"] == ["test_next.py::test_next[three]"]
    assert b["common"] == 2


def test_a_baseline_that_is_not_one_is_a_usage_error(project: Project) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(test_next=CASES)
    (project.path / "quantgate-baseline.json").write_text('{"schema": 1, "variants": {}}')
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *quantgate-baseline.json: not a quantgate baseline (schema 1); "
                                 "rewrite it with pytest --quant-update-baseline"])
