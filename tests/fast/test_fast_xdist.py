"""``pytest -n 2`` with the fake backend: the plugin groups each variant's cases and verdicts
on one worker (so it loads once), or every variant on one worker when a gate compares to the
reference; the controller builds the same summary as a run without xdist. xdist cannot run
in process, so these two runs are subprocesses (about 2 s each)."""

from __future__ import annotations

import re

import pytest

from .fake_project import FakeProject, echo_cases

WORKER_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED|XFAIL|SKIPPED|ERROR) (\S+)")
VARIANTS = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


def workers_by_variant(result: pytest.RunResult) -> dict[str, set[str]]:
    """variant -> the xdist workers its tests and verdicts ran on, from ``-v`` lines such as
    ``[gw0] [ 10%] PASSED test_a.py::test_echo[Q8_0-alpha]``."""
    out: dict[str, set[str]] = {}
    seen = 0
    for line in result.outlines:
        m = WORKER_LINE.match(line)
        if m is None:
            continue
        seen += 1
        worker, nodeid = m.group(1), m.group(3)
        variant = nodeid[nodeid.rindex("[") + 1:-1].split("-")[0]
        assert variant in VARIANTS, line
        assert "@" not in nodeid, line  # the loadgroup suffix never shows
        out.setdefault(variant, set()).add(worker)
    assert seen == 40, result.stdout.str()  # 2 modules x 4 variants x (4 cases + 1 verdict)
    return out


def _project(fake: FakeProject, rubric: str) -> None:
    fake.config(list(VARIANTS), reference="F16")
    fake.script(wrong={"Q2_K": {"alpha": "x", "beta": "x"}})
    fake.pytester.makepyfile(test_a=echo_cases(rubric), test_b=echo_cases(rubric))


def test_each_variant_runs_on_one_worker_and_the_summary_matches_a_plain_run(fake: FakeProject) -> None:
    _project(fake, "accuracy=0.75")
    plain, plain_report = fake.run_report()
    result, report = fake.run_report("-n", "2", "-v", subprocess=True)
    workers = workers_by_variant(result)
    assert set(workers) == set(VARIANTS)
    assert all(len(w) == 1 for w in workers.values()), workers
    # one load per variant in all, each in one process, closed there
    loads = [v for what, v in fake.events() if what == "load"]
    assert sorted(loads) == sorted(VARIANTS)
    assert all(len(pids) == 1 for pids in fake.event_pids().values())
    assert sorted(v for what, v in fake.events() if what == "close") == sorted(VARIANTS)

    def same(r: dict) -> dict:  # type: ignore[type-arg]
        return {"smallest": r["smallest_passing"], "by_group": r["smallest_passing_by_group"],
                "rows": [(v["name"], v["passed"], v["reasons"], v["loads"],
                          {g: (gr["accuracy"], gr["case_outcomes"]) for g, gr in v["groups"].items()})
                         for v in r["variants"]]}

    assert same(report) == same(plain_report)
    assert report["smallest_passing"] == "Q4_K_M"
    assert fake.summary_calls()[-1]["smallest_passing"] == "Q4_K_M"
    assert len(fake.summary_calls()) == 2  # once for the plain run, once for the xdist controller
    assert result.ret == plain.ret == pytest.ExitCode.TESTS_FAILED


def test_a_gate_against_the_reference_puts_every_variant_on_one_worker(fake: FakeProject) -> None:
    _project(fake, "accuracy=0.25, max_drop_vs_reference=0.6")
    result, report = fake.run_report("-n", "2", "-v", subprocess=True)
    workers = workers_by_variant(result)
    assert len(set().union(*workers.values())) == 1, workers
    # the reference's outcomes were there to compare with
    q2 = next(v for v in report["variants"] if v["name"] == "Q2_K")
    ref = q2["groups"]["test_a.py"]["vs_reference"]
    assert ref["reference"] == "F16" and ref["lost"] == 2 and ref["drop"] == pytest.approx(0.5)
    assert report["smallest_passing"] == "Q2_K"
    assert result.ret == pytest.ExitCode.OK
