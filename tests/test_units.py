"""Pure logic: rubric evaluation, selection, checks, rendering, GGUF preflight."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantgate_project import Ladder
from pytest_quantgate.checks import contains_any, json_matching, matches, number_in, numbers
from pytest_quantgate.config import ConfigError, select_variants
from pytest_quantgate.gguf_info import GGUFError, read_info
from pytest_quantgate.rubric import GroupFigures, Rubric, RubricError, evaluate, parse_rubric
from pytest_quantgate.records import CaseRecord, Verdict
from pytest_quantgate.render import render_lines
from pytest_quantgate.summary import build_summary

NAMES = ("F16", "Q8_0", "Q4_0", "Q4_K_M", "Q2_K")


@pytest.mark.parametrize("spec,expected", [
    (None, NAMES),
    ("q4", ("Q4_0", "Q4_K_M")),
    ("Q4_K_M,f16", ("F16", "Q4_K_M")),
    ("Q8", ("Q8_0",)),
    (" q2_k , ", ("Q2_K",)),
])
def test_select_variants(spec: str | None, expected: tuple[str, ...]) -> None:
    assert select_variants(NAMES, spec) == expected


def test_select_variants_unknown_lists_configured() -> None:
    with pytest.raises(ConfigError, match=r"'Q5' selects no variant; configured: F16, Q8_0, Q4_0"):
        select_variants(NAMES, "Q4,Q5")


def test_prefix_needs_underscore_boundary() -> None:
    with pytest.raises(ConfigError):
        select_variants(("Q4X",), "Q4")


@pytest.mark.parametrize("values,message", [
    ({"acuracy": 0.8}, "acuracy: unknown key; known keys: accuracy, tokens_per_second, "
     "prompt_tokens_per_second, memory_mb, disk_mb, load_seconds, max_accuracy_drop, "
     "max_drop_vs_reference, max_kld, min_top1_agreement, max_perplexity_ratio, "
     "min_speedup_vs_reference, max_memory_vs_reference, max_speed_drop, max_memory_growth, "
     "repeats, case_pass_rate, accuracy_bound"),
    ({"repeats": 0}, "repeats: expected a positive number, got 0"),
    ({"repeats": 65}, "repeats: expected a whole number from 1 to 64, got 65"),
    ({"repeats": 2.5}, "repeats: expected a whole number from 1 to 64, got 2.5"),
    ({"case_pass_rate": 1.5}, "case_pass_rate: expected a number between 0 and 1, got 1.5"),
    ({"case_pass_rate": 0}, "case_pass_rate: expected a share above 0 (up to 1), got 0"),
    ({"accuracy": 1.5}, "accuracy: expected a number between 0 and 1, got 1.5"),
    ({"accuracy": "high"}, "accuracy: expected a number, got 'high'"),
    ({"memory_mb": -1}, "memory_mb: expected a positive number, got -1"),
    ({"disk_mb": True}, "disk_mb: expected a number, got True"),
])
def test_parse_rubric_rejects(values: dict[str, object], message: str) -> None:
    with pytest.raises(RubricError) as exc:
        parse_rubric(values)
    assert str(exc.value) == message


def fig(**kw: object) -> GroupFigures:
    base: dict[str, object] = dict(cases=50, passed=31, misses=19, failures=0, tokens_per_second=50.0,
                                   prompt_tokens_per_second=500.0, memory_mb=512.0, disk_mb=105.5,
                                   load_seconds=0.2)
    base.update(kw)
    return GroupFigures(**base)  # type: ignore[arg-type]


def test_evaluate_one_line_per_miss() -> None:
    rubric = Rubric(accuracy=0.8, tokens_per_second=60, memory_mb=400, disk_mb=150)
    assert evaluate(rubric, fig()) == [
        "accuracy 0.62 < 0.80 (31/50 cases)",
        "speed 50.0 tok/s < 60 tok/s",
        "memory 512 MB > 400 MB",
    ]
    assert evaluate(Rubric(accuracy=0.6, memory_mb=600, disk_mb=110), fig()) == []


def test_evaluate_unmeasured_is_a_miss_not_a_pass() -> None:
    assert evaluate(Rubric(tokens_per_second=1), fig(tokens_per_second=None)) == [
        "speed: not measured (no generation call in this group)"
    ]
    assert evaluate(Rubric(accuracy=0.5), fig(cases=0, passed=0)) == ["accuracy: no case ran"]


def test_marker_overrides_defaults() -> None:
    merged = Rubric(accuracy=0.9, memory_mb=100).merged(Rubric(accuracy=0.5))
    assert merged == Rubric(accuracy=0.5, memory_mb=100)
    assert merged.counts_misses and not Rubric(accuracy=1.0).counts_misses


def test_checks_give_bool_and_reason() -> None:
    assert contains_any("The capital is Paris.", ["paris", "lutetia"])
    c = contains_any("It is Lyon.", ["paris"])
    assert not c and repr(c) == "none of ['paris'] in 'It is Lyon.'"
    assert numbers("It costs 1,250 dollars, or -3.5 each") == [1250.0, -3.5]
    assert number_in("The answer is 42.", 42)
    assert repr(number_in("seven plus 5 = 13", 12)) == "expected 12, got 5, 13 in 'seven plus 5 = 13'"
    assert matches(" 2024-01-31\n", r"\d{4}-\d{2}-\d{2}")
    assert not matches("Date: 2024-01-31", r"\d{4}-\d{2}-\d{2}")
    assert json_matching('```json\n{"name": "Ann", "age": 31}\n```', {"name": "str", "age": "int"})
    assert repr(json_matching('{"age": "31"}', {"age": "int"})) == "JSON key 'age' should be int, got '31'"
    assert not json_matching('{"ok": 1}', {"ok": "bool"})
    assert not json_matching("name: Ann", {"name": "str"})
    assert json_matching('{"city": "paris"}', {"city": "str"}, equals={"city": "Paris"})


def _summary(outcomes: dict[str, list[str]], sizes: dict[str, int], verdict_pass: dict[str, bool]):  # type: ignore[no-untyped-def]
    cases = [CaseRecord(f"t.py::test[{v}-{i}]", v, "t.py", o) for v, os_ in outcomes.items() for i, o in enumerate(os_)]
    verdicts = {
        ("t.py", v): Verdict(group="t.py", variant=v, thresholds={"accuracy": 0.5}, cases=len(os_),
                             passed_cases=os_.count("passed"), misses=os_.count("miss"), failures=0,
                             accuracy=os_.count("passed") / len(os_), passed=verdict_pass[v],
                             reasons=[] if verdict_pass[v] else ["accuracy 0.00 < 0.50 (0/2 cases)"])
        for v, os_ in outcomes.items()
    }
    variants = {v: {"name": v, "size_bytes": s, "stats": {"loads": 1, "memory_mb": 1.0}} for v, s in sizes.items()}
    return build_summary(variants=variants, cases=cases, verdicts=verdicts, gate="all")


def test_summary_smallest_passing_ignores_misses_but_not_failures() -> None:
    s = _summary(
        {"F16": ["passed", "passed"], "Q4": ["passed", "miss"], "Q2": ["miss", "miss"]},
        {"F16": 300_000_000, "Q4": 100_000_000, "Q2": 80_000_000},
        {"F16": True, "Q4": True, "Q2": False},
    )
    assert [r.name for r in s.rows] == ["Q2", "Q4", "F16"]
    assert s.smallest_passing == "Q4"
    lines = render_lines(s)
    assert lines[-1] == "smallest passing variant: Q4 (100.0 MB)"
    assert lines[1].split()[:2] == ["Q2", "80.0"] and "FAIL: t.py: accuracy" in lines[1]
    s2 = _summary({"Q4": ["passed", "failed"]}, {"Q4": 1}, {"Q4": True})
    assert s2.smallest_passing is None and render_lines(s2)[-1] == "no variant passes the rubric"


def test_preflight_rejects_bad_files(ladder: Ladder, tmp_path: Path) -> None:
    src = ladder.files["Q2_K"]
    info = read_info(src)
    assert (info.file_type, info.architecture) == ("Q2_K", "llama")
    assert info.n_params == 134_515_008

    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(GGUFError, match=r"not a GGUF file \(magic b'PK\\x03\\x04'"):
        read_info(not_gguf)

    truncated = tmp_path / "t.gguf"
    with src.open("rb") as fh:
        truncated.write_bytes(fh.read(src.stat().st_size // 2))
    with pytest.raises(GGUFError, match=r"truncated|unreadable"):
        read_info(truncated)

    v9 = tmp_path / "v9.gguf"
    shutil.copyfile(src, v9)
    with v9.open("r+b") as fh:
        fh.seek(4)
        fh.write((9).to_bytes(4, "little"))
    with pytest.raises(GGUFError, match="unsupported GGUF version 9"):
        read_info(v9)


def test_accuracy_bound_modes_and_the_cases_it_takes() -> None:
    three_of_four = fig(cases=4, passed=3, misses=1)
    assert evaluate(Rubric(accuracy=0.7), three_of_four) == []
    lower = evaluate(Rubric(accuracy=0.7, accuracy_bound="lower"), three_of_four)
    # the independent instrument: scipy's Wilson interval, searched case count by case count
    from scipy.stats import binomtest
    enough = next(n for n in range(1, 5000)
                  if binomtest(round(0.75 * n), n).proportion_ci(method="wilson").low >= 0.7 - 1e-12)
    assert lower == ["accuracy 0.75 [0.30-0.95]: lower bound 0.30 < 0.70 (accuracy_bound: lower, "
                     f"3/4 cases; at 0.75 the bound clears 0.70 from {enough} cases)"]
    assert evaluate(Rubric(accuracy=0.9), three_of_four) == ["accuracy 0.75 < 0.90 (3/4 cases)"]
    assert evaluate(Rubric(accuracy=0.9, accuracy_bound="upper"), three_of_four) == []
    assert evaluate(Rubric(accuracy=0.99, accuracy_bound="upper"), fig(cases=40, passed=30)) == [
        "accuracy 0.75 [0.60-0.86]: even the upper bound 0.86 < 0.99 (accuracy_bound: upper, 30/40 cases)"]
    with pytest.raises(RubricError, match="accuracy_bound: expected point, lower or upper, got 'strict'"):
        parse_rubric({"accuracy_bound": "strict"})


def test_speed_drift_fails_only_beyond_noise() -> None:
    base = (100.0, 95.0, 105.0)  # median, min, max as blessed
    gate = Rubric(max_speed_drop=0.1)  # floor: 95 * 0.9 = 85.5
    assert evaluate(gate, fig(decode_speed=(80.0, 78.0, 82.0), baseline_speed=base, compared=False)) == []

    def compared(**kw: object) -> GroupFigures:  # judged against a baseline being compared with
        return fig(compared=True, **kw)

    assert evaluate(gate, compared(decode_speed=(90.0, 88.0, 92.0), baseline_speed=base)) == []
    assert evaluate(gate, compared(decode_speed=(80.0, 78.0, 82.0), baseline_speed=base)) == [
        "decode 80.0 tok/s (78.0-82.0) vs the baseline's 100.0 (95.0-105.0): fell more than 10% (floor 85.5)"]
    assert evaluate(gate, compared(decode_speed=(86.0, 84.0, 90.0), baseline_speed=base)) == [
        "decode 86.0 tok/s (84.0-90.0) vs the baseline's 100.0 (95.0-105.0): the 10% floor 85.5 is inside "
        "this run's spread: unstable; raise speed_probe.repeats or quiet the machine"]
    assert evaluate(gate, compared(decode_speed=(86.0, 84.0, 90.0))) == [
        "max_speed_drop: the baseline has no speed for this variant; bless it with a speed gate in place"]
