"""The speed probe: calibrated speed figures (a warm-up, then R timed runs of a fixed workload),
thresholds that cannot be decided fail closed, and gates relative to the reference."""

from __future__ import annotations

import textwrap

import pytest

from quantgate_project import Project

CASE = textwrap.dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric({rubric})
    def test_count(quant_model):
        assert quant_model.generate("1, 2, 3,", max_tokens=4)
""")


def test_probe_figures_carry_median_min_max(project: Project) -> None:
    project.config(["Q2_K"], speed_probe={"repeats": 4})
    project.pytester.makepyfile(CASE.format(rubric="tokens_per_second=1"))
    result, report = project.run_report()
    result.assert_outcomes(passed=2)
    row = report["variants"][0]
    probe = row["probe"]
    assert probe["repeats"] == 4
    for key in ("tokens_per_second", "decode_tokens_per_second", "prompt_tokens_per_second"):
        s = probe[key]
        assert 0 < s["min"] <= s["median"] <= s["max"]
        assert s["spread"] == pytest.approx((s["max"] - s["min"]) / s["median"])
    assert row["tokens_per_second"] == probe["tokens_per_second"]["median"]  # the table shows it


def test_no_speed_gate_no_probe(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(CASE.format(rubric="accuracy=0.5"))
    _, report = project.run_report()
    assert report["variants"][0]["probe"] is None


JITTER = """
import time
from pytest_quantgate.backend import LlamaCppBackend

def pytest_quantgate_load_model(config, variant, llama_kwargs):
    loaded = LlamaCppBackend().load(variant, llama_kwargs=llama_kwargs)
    real = loaded.llm.create_completion
    calls = []
    def every_other_call_slow(*args, **kwargs):  # a machine that is busy half the time
        calls.append(1)
        if len(calls) % 2:
            time.sleep(1.0)
        return real(*args, **kwargs)
    loaded.llm.create_completion = every_other_call_slow
    return loaded
"""


def test_a_threshold_inside_the_measured_spread_fails_closed(project: Project) -> None:
    """Really slowed down every other call: the spread straddles 30 tok/s on any machine that
    decodes this 135M model faster than that, so the gate cannot be decided and must fail."""
    project.config(["Q2_K"])
    project.pytester.makeconftest(JITTER)
    project.pytester.makepyfile(CASE.format(rubric="tokens_per_second=30"))
    result, report = project.run_report()
    result.stdout.fnmatch_lines([
        "*speed * tok/s (*-*) too close to 30 tok/s: unstable; raise speed_probe.repeats or quiet the machine",
    ])
    probe = report["variants"][0]["probe"]["tokens_per_second"]
    assert probe["min"] < 30 < probe["max"]
    assert report["smallest_passing"] is None


def test_relative_gates_pass_and_fail_on_the_ladder(project: Project) -> None:
    """Q2_K decodes about twice as fast as F16 here and needs about 0.6x its memory; ratios of
    figures measured in one run hold on any machine where absolute tok/s do not."""
    project.config(["F16", "Q2_K"], reference="F16")
    project.pytester.makepyfile(
        test_ok=CASE.format(rubric="min_speedup_vs_reference=1.2, max_memory_vs_reference=0.9"),
        test_strict=CASE.format(rubric="min_speedup_vs_reference=10, max_memory_vs_reference=0.1"),
    )
    result, report = project.run_report()
    rows = {v["name"]: v for v in report["variants"]}
    q2 = rows["Q2_K"]["groups"]
    assert q2["test_ok.py"]["passed"] is True
    assert q2["test_strict.py"]["reasons"][0].startswith("speedup vs reference ")
    assert " x < 10 x" in q2["test_strict.py"]["reasons"][0]
    assert q2["test_strict.py"]["reasons"][1].startswith("memory vs reference ")
    assert rows["F16"]["groups"]["test_strict.py"]["passed"] is True  # not compared with itself


def test_relative_gate_without_the_reference_in_the_run_says_why(project: Project) -> None:
    project.config(["F16", "Q2_K"], reference="F16")
    project.pytester.makepyfile(CASE.format(rubric="min_speedup_vs_reference=1.2"))
    result = project.run("--quant-variants=Q2")
    result.stdout.fnmatch_lines(["*min_speedup_vs_reference: reference F16 was not measured in this run "
                                 "(select it with --quant-variants)*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
