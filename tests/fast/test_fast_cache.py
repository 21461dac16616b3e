"""The exact result cache, over the fake backend: what hits, what misses, what is never trusted.

The fake's answers follow fake.json rather than the model file, so these tests turn the cache
on explicitly (``fake.cache = True``) and never change the script between runs unless the
point is that the cache cannot see such a change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_quantgate.backend import Completion
from pytest_quantgate.cache import (ResultCache, completion_from_dict, completion_to_dict,
                                    deterministic, plain)

from .fake_project import FakeProject, dedent, echo_cases


def entries(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.json"))


def cached(fake: FakeProject, *args: str) -> tuple[pytest.RunResult, dict]:  # type: ignore[type-arg]
    fake.cache = True
    return fake.run_report(f"--quant-cache={fake.path / 'results'}", *args)


def row(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(r for r in report["variants"] if r["name"] == name)


def test_a_warm_run_answers_every_call_from_the_cache_and_loads_nothing(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(wrong={"Q2_K": {"gamma": "nope"}})
    fake.pytester.makepyfile(test_qa=echo_cases())
    cold, first = cached(fake)
    assert [e for e in fake.events() if e[0] == "load"] == [("load", "Q8_0"), ("load", "Q2_K")]
    assert len(entries(fake.path / "results")) == 8
    warm, second = cached(fake)
    assert fake.events() == []  # no load, no call, no close
    warm.stdout.fnmatch_lines(["*quantgate: result cache */results",
                               "result cache: 8 of 8 calls answered from the cache "
                               "(Q2_K 4/4 (not loaded), Q8_0 4/4 (not loaded))"])
    assert cold.parseoutcomes() == warm.parseoutcomes()
    for name in ("Q8_0", "Q2_K"):
        a, b = row(first, name), row(second, name)
        assert a["groups"]["test_qa.py"]["case_outcomes"] == b["groups"]["test_qa.py"]["case_outcomes"]
        assert (a["passed"], a["cached_calls"], b["cached_calls"], b["live_calls"], b["loads"]) == (
            True, 0, 4, 0, 0)


def test_a_changed_prompt_reruns_only_its_own_calls(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    cached(fake)
    fake.pytester.makepyfile(test_qa=echo_cases().replace('"gamma"', '"omega"'))
    _, report = cached(fake)
    assert [e for e in fake.events() if e[0] == "call"] == [("call", "Q8_0"), ("call", "Q2_K")]
    assert [(row(report, n)["cached_calls"], row(report, n)["live_calls"]) for n in ("Q8_0", "Q2_K")] == [
        (3, 1), (3, 1)]


def test_a_changed_model_file_misses(fake: FakeProject) -> None:
    fake.config(["Q2_K"], files={"Q2_K": fake.ladder.files["Q2_K"]})
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    cached(fake)
    # another file under the same name: its SHA-256 keys every answer
    fake.config(["Q2_K"], files={"Q2_K": fake.ladder.files["Q4_K_M"]})
    _, report = cached(fake)
    assert row(report, "Q2_K")["cached_calls"] == 0 and row(report, "Q2_K")["live_calls"] == 4


def test_corrupt_and_foreign_entries_are_misses_with_a_warning(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    cached(fake)
    files = entries(fake.path / "results")
    files[0].write_text("{not json")
    # a valid entry filed under another key: it must not answer the call it is filed under
    files[1].write_text(files[2].read_text())
    # right key and request, but the answer is not a completion
    data = json.loads(files[3].read_text())
    data["result"]["tokens"] = "rm -rf /"
    files[3].write_text(json.dumps(data))
    result, report = cached(fake, "-W", "default")
    result.stdout.fnmatch_lines_random([
        f"*quantgate cache: ignoring {files[0]}: not valid JSON; the call runs live and rewrites it",
        f"*quantgate cache: ignoring {files[1]}: its stored key does not match*",
        f"*quantgate cache: ignoring {files[3]}: its result is not a valid answer*",
    ])
    assert row(report, "Q2_K")["live_calls"] == 3 and row(report, "Q2_K")["cached_calls"] == 1
    assert row(report, "Q2_K")["groups"]["test_qa.py"]["accuracy"] == 1.0
    # the live answers rewrote the three entries: the next run is all hits, without warnings
    result, report = cached(fake, "-W", "error::pytest.PytestWarning")
    assert row(report, "Q2_K")["cached_calls"] == 4


def test_refresh_recomputes_and_off_never_touches_the_cache(fake: FakeProject) -> None:
    fake.config(["Q2_K"], cache="results")  # refresh applies to the configured directory
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    fake.cache = True
    fake.run_report()
    before = {p: p.stat().st_mtime_ns for p in entries(fake.path / "results")}
    fake.script(wrong={"Q2_K": {"alpha": "a"}})  # a change the key cannot see...
    _, report = fake.run_report()
    assert row(report, "Q2_K")["groups"]["test_qa.py"]["accuracy"] == 1.0  # ...so the cache answers
    _, report = fake.run_report("--quant-cache=refresh")
    assert row(report, "Q2_K")["live_calls"] == 4
    assert row(report, "Q2_K")["groups"]["test_qa.py"]["accuracy"] == 0.75
    after = {p: p.stat().st_mtime_ns for p in entries(fake.path / "results")}
    assert set(after) == set(before) and all(after[p] > before[p] for p in after)
    # refresh rewrote alpha's entry: a normal run now sees the new answer
    _, report = fake.run_report()
    assert row(report, "Q2_K")["cached_calls"] == 4
    assert row(report, "Q2_K")["groups"]["test_qa.py"]["accuracy"] == 0.75
    _, report = fake.run_report("--quant-cache=off")
    assert row(report, "Q2_K")["cached_calls"] == 0
    assert {p: p.stat().st_mtime_ns for p in entries(fake.path / "results")} == after


def test_speed_and_memory_gates_load_every_variant_even_when_all_calls_hit(fake: FakeProject) -> None:
    """Cached answers carry no live speed or memory: with such a gate every variant loads and
    is probed, and the verdict is judged on those live figures."""
    fake.config(["Q8_0", "Q2_K"])
    fake.script(speed={"Q2_K": 5.0}, memory_mb={"Q8_0": 900.0})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.75, tokens_per_second=20, memory_mb=500"))
    cached(fake)
    result, report = cached(fake)
    loads = [e for e in fake.events() if e[0] == "load"]
    assert loads == [("load", "Q8_0"), ("load", "Q2_K")]
    calls = [e for e in fake.events() if e[0] == "call"]
    assert len(calls) == 2 * 6  # the speed probe only (a warm-up and five timed runs)
    assert row(report, "Q2_K")["cached_calls"] == 4 and row(report, "Q2_K")["passed"] is False
    assert row(report, "Q8_0")["passed"] is False
    result.stdout.fnmatch_lines_random(["*quant_rubric?Q2_K? - Failed: speed 5.0 tok/s < 20 tok/s",
                                        "*quant_rubric?Q8_0? - Failed: memory 900 MB > 500 MB"])


def test_sampled_calls_without_a_fixed_seed_are_never_cached(fake: FakeProject) -> None:
    fake.config(["Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_s=dedent("""
        def test_sampled(quant_model):
            assert quant_model.generate("alpha", temperature=0.7, seed=-1) == "alpha"

        def test_seeded(quant_model):
            assert quant_model.generate("beta", temperature=0.7, seed=3) == "beta"

        def test_grammar_object(quant_model):
            assert quant_model.generate("gamma", logits_processor=[object()]) == "gamma"
    """))
    cached(fake)
    _, report = cached(fake)
    assert (row(report, "Q2_K")["cached_calls"], row(report, "Q2_K")["live_calls"]) == (1, 2)


def test_bad_cache_settings_are_usage_errors(fake: FakeProject) -> None:
    fake.config(["Q2_K"], cache=7)
    fake.pytester.makepyfile(test_qa=echo_cases())
    result = fake.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: quantgate.yaml: cache: expected a directory or off, got 7*"])
    fake.config(["Q2_K"])
    (fake.path / "afile").write_text("x")
    fake.cache = True
    result = fake.run(f"--quant-cache={fake.path / 'afile'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --quant-cache: {fake.path / 'afile'} is a file; give a "
                                 "directory for the result cache"])


def test_cache_dir_from_the_config_is_relative_to_it(fake: FakeProject) -> None:
    fake.config(["Q2_K"], cache="qcache")
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    fake.cache = True
    fake.run().assert_outcomes(passed=5)
    assert len(entries(fake.path / "qcache")) == 4


# -- the pure parts -------------------------------------------------------------------------

def test_only_plain_json_and_deterministic_calls_are_keys() -> None:
    assert plain({"a": [1, 2.5, None, "x", True]}) and not plain({"a": object()})
    assert not plain({"a": float("nan")}) and not plain({1: "x"})
    assert deterministic("complete", {"temperature": 0.0})
    assert not deterministic("complete", {})  # llama-cpp-python's default is 0.8
    assert not deterministic("chat", {"temperature": 0.7, "seed": -1})
    assert deterministic("chat", {"temperature": 0.7, "seed": 5})
    assert not deterministic("chat", {"temperature": 0.7, "seed": True})


def test_a_completion_round_trips_and_anything_else_is_refused(tmp_path: Path) -> None:
    c = Completion("hi", 3, 1, 0.5, 3, 1.0, 1, 2.0, "stop", (1, 2, 3, 4))
    back = completion_from_dict(json.loads(json.dumps(completion_to_dict(c))))
    assert back is not None and back.cached and back.tokens == c.tokens and back.text == "hi"
    good = completion_to_dict(c)
    bad: object
    for bad in ({**good, "text": 3}, {**good, "tokens": [1, "2"]}, {**good, "extra": 1},
                {k: v for k, v in good.items() if k != "eval_ms"}, {**good, "prompt_tokens": True}, []):
        assert completion_from_dict(bad) is None, bad
    cache = ResultCache(tmp_path)
    cache.put({"op": "x"}, good)
    assert cache.get({"op": "x"}, completion_from_dict) == back
    assert cache.get({"op": "y"}, completion_from_dict) is None
    assert ResultCache(tmp_path, "refresh").get({"op": "x"}, completion_from_dict) is None
