"""The committed baseline is byte-stable and guards the gate it was blessed under: looser
thresholds and lost cases fail until they are re-blessed (and so show in the diff)."""

from __future__ import annotations

import textwrap

import pytest

from quantgate_project import Project

BODY = textwrap.dedent("""
    import os, pytest
    pytestmark = pytest.mark.quant_rubric(accuracy={accuracy}, disk_mb=500)
    @pytest.mark.parametrize("n", {names!r})
    def test_case(quant_model, n):
        if os.environ.get("SKIP") == n:
            pytest.skip("not today")
        assert quant_model.generate("1, 2, 3,", max_tokens=2)
""")


def _project(project: Project, accuracy: float = 0.5, names: tuple[str, ...] = ("one", "two", "three")) -> None:
    project.config(["Q8_0", "Q2_K"])
    project.pytester.makepyfile(test_g=BODY.format(accuracy=accuracy, names=list(names)))


def test_blessing_an_unchanged_setup_twice_writes_the_same_bytes(project: Project) -> None:
    _project(project)
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    first = (project.path / "quantgate-baseline.json").read_bytes()
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    assert (project.path / "quantgate-baseline.json").read_bytes() == first
    text = first.decode()
    for volatile in ("tokens_per_second", "load_seconds"):
        assert volatile not in text  # they belong in the JSON report
    assert '"memory_mb": ' in text  # kept while within noise: the same bytes
    assert '"thresholds": {\n' in text and '"accuracy": 0.5' in text


def test_a_loosened_threshold_fails_first_until_reblessed(project: Project) -> None:
    _project(project, accuracy=0.9)
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    _project(project, accuracy=0.5)
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "Q2_K * FAIL: test_g.py: the gate is looser than the baseline's: accuracy 0.9 -> 0.5; "
        "re-bless with --quant-update-baseline to accept it",
    ])
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    project.run().assert_outcomes(passed=8)  # accepted: the diff showed it


@pytest.mark.parametrize("how", ["deleted", "skipped"])
def test_a_lost_baseline_case_fails_first(project: Project, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(project)
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    if how == "deleted":
        _project(project, names=("one", "three"))
    else:
        monkeypatch.setenv("SKIP", "two")
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "Q2_K * FAIL: test_g.py: 1 baseline case(s) did not run (deleted or skipped): two; "
        "re-bless with --quant-update-baseline to accept it",
    ])


def test_a_k_subset_is_not_a_lost_case(project: Project) -> None:
    _project(project)
    project.run("--quant-update-baseline").assert_outcomes(passed=8)
    result = project.run("-k", "one")
    result.assert_outcomes(passed=4, deselected=4)


def test_memory_and_speed_drift_against_the_baseline(project: Project) -> None:
    import json

    project.config(["Q2_K"])
    gate = "max_memory_growth=0.2, max_speed_drop=0.5"
    project.pytester.makepyfile(test_g=BODY.format(accuracy=0.5, names=["one"]).replace(
        "disk_mb=500", gate))
    project.run("--quant-update-baseline").assert_outcomes(passed=2)
    path = project.path / "quantgate-baseline.json"
    blessed = json.loads(path.read_text())
    q2 = blessed["variants"]["Q2_K"]
    assert q2["speed"]["min"] <= q2["speed"]["median"] <= q2["speed"]["max"] and q2["memory_mb"] > 50
    project.run().assert_outcomes(passed=2)  # the same setup: within noise
    # a baseline from a build that was much faster and leaner: both gates trip, naming both figures
    q2["speed"] = {k: v * 10 for k, v in q2["speed"].items()}
    q2["memory_mb"] = round(q2["memory_mb"] / 2, 1)
    path.write_text(json.dumps(blessed))
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*decode * tok/s (*-*) vs the baseline's * (*-*): fell more than 50% (floor *)*",
        "*memory * MB grew more than 20% over the baseline's * MB*",
    ])
