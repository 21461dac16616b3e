"""The example project, unmodified, on four rungs of the real ladder; and the same under xdist."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from quantgate_project import EXAMPLE, SLICES, Project

RUNGS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


def test_example_verdicts_agree_with_per_case_results(project: Project) -> None:
    slices = project.copy_example(rungs=RUNGS)
    defaults = yaml.safe_load((EXAMPLE / "quantgate.yaml").read_text())["rubric"]
    result, report = project.run_report("-p", "no:randomly")
    assert [v["name"] for v in report["variants"]] == ["Q2_K", "Q4_K_M", "Q8_0", "F16"]
    lines = result.outlines
    for v in report["variants"]:
        reasons_expected = []
        for s in SLICES:
            g = v["groups"][f"test_{s}.py"]
            outcomes = list(g["case_outcomes"].values())
            assert len(outcomes) == len(slices[s]["cases"]) == g["cases"]
            assert set(outcomes) <= {"passed", "miss"}  # misses, never failures
            acc = outcomes.count("passed") / len(outcomes)
            assert g["accuracy"] == pytest.approx(acc)
            ok = (acc >= slices[s]["rubric"]["accuracy"]
                  and g["tokens_per_second"] >= defaults["tokens_per_second"]
                  and v["memory_mb"] <= defaults["memory_mb"])
            assert g["passed"] is ok, (v["name"], s, g)
            if not ok:
                reasons_expected.append(s)
        assert v["passed"] is (not reasons_expected)
        row = next(line for line in lines if line.startswith(v["name"] + " "))
        assert row.endswith("pass") is v["passed"]
    passing = [v for v in report["variants"] if v["passed"]]  # already smallest first
    expected = passing[0]["name"] if passing else None
    assert report["smallest_passing"] == expected
    result.stdout.fnmatch_lines([
        f"smallest passing variant: {expected} (*" if expected else "no variant passes the rubric",
        "  test_arithmetic.py: *", "  test_facts.py: *", "  test_format.py: *",
    ])
    # the low rung really falls off the cliff on this model
    assert group_passed(report, "Q2_K") == {"arithmetic": False, "facts": False, "format": False}
    assert group_passed(report, "F16") == {"arithmetic": True, "facts": True, "format": True}


def group_passed(report: dict[str, Any], name: str) -> dict[str, bool]:
    v = next(v for v in report["variants"] if v["name"] == name)
    return {s: v["groups"][f"test_{s}.py"]["passed"] for s in SLICES}


def test_same_summary_under_xdist(project: Project) -> None:
    """`pytest -n 2`: each variant stays on one worker; the controller's summary is the same."""
    project.copy_example(rungs=("Q8_0", "Q2_K"))
    cfg = project.path / "quantgate.yaml"
    # one thread per worker (batch too): two OpenMP pools spinning on two cores would crawl;
    # speed then differs between the runs, so it is not gated here
    text = cfg.read_text().replace("n_threads: 2", "n_threads: 1, n_threads_batch: 1")
    text = text.replace("tokens_per_second: 8 ", "tokens_per_second: 0.1 ").replace("reference: F16\n", "")
    cfg.write_text(text)
    args = ("-p", "no:randomly", "test_facts.py")
    serial, serial_report = project.run_report(*args)
    parallel, parallel_report = project.run_report("-n", "2", *args)
    for a, b in zip(serial_report["variants"], parallel_report["variants"], strict=True):
        assert a["name"] == b["name"] and a["passed"] == b["passed"] and a["loads"] == b["loads"] == 1
        ga, gb = a["groups"]["test_facts.py"], b["groups"]["test_facts.py"]
        assert ga["accuracy"] == gb["accuracy"] and ga["passed"] == gb["passed"]
        strip = lambda d: {k.split("@")[0]: o for k, o in d.items()}  # noqa: E731
        assert strip(ga["case_outcomes"]) == strip(gb["case_outcomes"])
    assert serial_report["smallest_passing"] == parallel_report["smallest_passing"]
    assert serial.ret == parallel.ret
