"""The exact result cache and early decisions on the real ladder and the unmodified example."""

from __future__ import annotations

import json
from typing import Any

import yaml

from quantgate_project import Project

RUNGS = ("F16", "Q2_K")  # the example compares with F16, its reference


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["variants"]}


def outcomes(report: dict[str, Any]) -> dict[str, Any]:
    """What a verdict is made of, without the figures that move run to run."""
    return {r["name"]: (r["passed"], {g: (gr["passed"], gr["accuracy"], gr["case_outcomes"])
                                      for g, gr in r["groups"].items()}) for r in report["variants"]}


def test_the_example_warm_changed_and_cold_agree(project: Project) -> None:
    """Cold run, warm rerun, and a rerun after one case's prompt changed: the same outcomes;
    the warm run answers every call from the cache but still loads and probes each variant
    (the example gates speed and memory); the changed case reruns one call per variant."""
    project.copy_example(rungs=RUNGS)
    project.result_cache = True
    _, cold = project.run_report()
    assert all(r["cached_calls"] == 0 and r["live_calls"] == 82 for r in cold["variants"])
    warm_run, warm = project.run_report()
    assert outcomes(warm) == outcomes(cold)
    for r in warm["variants"]:
        assert (r["cached_calls"], r["live_calls"], r["loads"]) == (82, 0, 1)
        assert r["probe"] is not None and r["probe"]["repeats"] == 5  # speed measured live
        assert r["memory_mb"] > 50
    warm_run.stdout.fnmatch_lines(["result cache: 164 of 164 calls answered from the cache (Q2_K 82/82, F16 82/82)"])
    facts = project.path / "cases" / "facts.yaml"
    data = yaml.safe_load(facts.read_text())
    data["cases"][0]["prompt"] = "What is the capital city of France? Answer with one word."
    facts.write_text(yaml.safe_dump(data, sort_keys=False))
    _, changed = project.run_report()
    assert [(r["cached_calls"], r["live_calls"]) for r in changed["variants"]] == [(81, 1), (81, 1)]
    assert outcomes(changed) == outcomes(cold) or all(
        # the new prompt may be answered differently; nothing else may change
        {k: v for k, v in g[2].items() if "capital-france" not in k}
        == {k: v for k, v in cold_g[2].items() if "capital-france" not in k}
        for name in RUNGS for g, cold_g in zip(outcomes(changed)[name][1].values(),
                                               outcomes(cold)[name][1].values(), strict=True))


def test_a_variant_without_live_gates_is_never_loaded_when_every_call_hits(project: Project) -> None:
    project.config(["Q4_K_M", "Q2_K"])
    project.pytester.makepyfile(test_qa="""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

        @pytest.mark.parametrize("q", ["What is 2 + 2?", "Name a colour."])
        def test_q(quant_model, q):
            assert quant_model.chat(q, max_tokens=8)
    """)
    project.result_cache = True
    _, first = project.run_report()
    result, second = project.run_report()
    assert outcomes(first) == outcomes(second)
    for r in second["variants"]:
        assert (r["cached_calls"], r["live_calls"], r["loads"], r["memory_mb"]) == (2, 0, 0, None)
    result.stdout.fnmatch_lines(["result cache: 4 of 4 calls answered from the cache "
                                 "(Q2_K 2/2 (not loaded), Q4_K_M 2/2 (not loaded))"])
    # the same text as the live call: every entry holds what the model said
    entries = [json.loads(p.read_text()) for p in (project.path / "results").glob("*/*.json")]
    assert len(entries) == 4 and all(e["result"]["text"] and e["result"]["tokens"] for e in entries)
    # a different file under the same name misses: its SHA-256 keys its answers
    cfg = project.path / "quantgate.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["variants"]["Q2_K"] = str(project.ladder.files["Q3_K_M"])
    cfg.write_text(yaml.safe_dump(data))
    _, third = project.run_report()
    assert (rows(third)["Q2_K"]["live_calls"], rows(third)["Q4_K_M"]["cached_calls"]) == (2, 2)
    # a corrupt entry and a foreign one (another entry's bytes): misses with a warning, answered
    # live (which loads that variant) and rewritten
    files = sorted((project.path / "results").glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    q4 = [p for p in files if json.loads(p.read_text())["request"]["context"]["model_sha256"]
          == read_sha(project, "Q4_K_M")]
    q4[0].write_text(q4[0].read_text()[:40])
    q4[1].write_text(files[-1].read_text())
    result, fourth = project.run_report("-W", "default")
    result.stdout.fnmatch_lines_random([f"*quantgate cache: ignoring {q4[0]}: not valid JSON*",
                                        f"*quantgate cache: ignoring {q4[1]}: its stored key does not match*"])
    assert (rows(fourth)["Q4_K_M"]["live_calls"], rows(fourth)["Q4_K_M"]["loads"]) == (2, 1)
    assert outcomes(fourth)["Q4_K_M"] == outcomes(first)["Q4_K_M"]
    # refresh recomputes every call of the configured directory; off neither reads nor writes
    data["cache"] = "results"
    cfg.write_text(yaml.safe_dump(data))
    before = {p: p.stat().st_mtime_ns for p in (project.path / "results").glob("*/*.json")}
    refreshed_run, refreshed = project.run_report("--quant-cache=refresh")  # the last flag wins
    refreshed_run.stdout.fnmatch_lines([f"quantgate: result cache {project.path / 'results'} (refresh)"])
    assert all(r["cached_calls"] == 0 and r["live_calls"] == 2 for r in refreshed["variants"])
    after = {p: p.stat().st_mtime_ns for p in (project.path / "results").glob("*/*.json")}
    # the four calls of this setup rewritten; the two entries of the Q2_K file it no longer uses kept
    assert set(after) == set(before) and sum(after[p] > before[p] for p in before) == 4
    project.result_cache = False
    _, off = project.run_report()
    assert all(r["cached_calls"] == 0 and r["live_calls"] == 2 for r in off["variants"])
    assert {p: p.stat().st_mtime_ns for p in (project.path / "results").glob("*/*.json")} == after


def read_sha(project: Project, name: str) -> str:
    import hashlib

    return hashlib.sha256(project.ladder.files[name].read_bytes()).hexdigest()


def test_decide_early_on_the_example_gives_the_same_verdicts(project: Project) -> None:
    project.copy_example(rungs=RUNGS)
    _, full = project.run_report()
    result, early = project.run_report("--quant-decide-early", "-rs")
    for name in RUNGS:
        f, e = rows(full)[name], rows(early)[name]
        assert f["passed"] is e["passed"]
        for g, fg in f["groups"].items():
            eg = e["groups"][g]
            assert fg["passed"] is eg["passed"], (name, g)
            assert fg["reasons"][:1] == eg["reasons"][:1] or (
                fg["reasons"][0].split(" ")[0] == eg["reasons"][0].split(" ")[0] == "accuracy")
            if eg["undecided"]:  # the bound is the best case: never below the full run's figure
                assert eg["accuracy"] >= fg["accuracy"] and not eg["passed"]
    skipped = sum(g["undecided"] for r in early["variants"] for g in r["groups"].values())
    assert skipped > 0  # Q2_K falls off the cliff: some of its cases were decided
    result.stdout.fnmatch_lines(["SKIPPED *verdict decided: * misses > * allowed"])
