"""The JSON report as the HTML report reads it: a plain dict (this run's, or a saved or merged
file that ``report_check`` has read and checked) -> typed, frozen views. Each field the page
uses is checked again as it is read, transcripts included (``report_check`` stops at "a list
of objects"), so a bad dict fails with one line naming the field, never deep in the template;
a field an older report lacks falls back to what it has (no transcripts: cases come from
each group's ``case_outcomes``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .constants import MB
from .display import show
from .records import case_key

T = TypeVar("T")
D = TypeVar("D")


class ReportError(ValueError):
    """The report lacks the shape the HTML needs; the message names the field, e.g.
    ``variants[2].groups["test_facts.py"].accuracy: expected a number or null, got 'high'``."""


@dataclass(frozen=True)
class Call:
    op: str
    prompt: str
    reply: str
    prompt_tokens: int
    completion_tokens: int
    wall_seconds: float | None
    finish_reason: str | None
    cached: bool
    repeat: int | None = None  # which repeat made it, under quant_rubric(repeats=N)
    seed: int | None = None
    batch: int = 1  # sequences decoded together with it
    reused: bool = False  # a greedy answer made once for every repeat


@dataclass(frozen=True)
class Flip:
    key: str
    against: str  # "reference" or "baseline"
    was: str
    now: str


@dataclass(frozen=True)
class Case:
    nodeid: str
    key: str  # the node id without the variant: the same case on every variant
    group: str | None
    outcome: str
    message: str
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Fidelity:
    mean_kld: float | None
    p99_kld: float | None
    top1_agreement: float | None
    perplexity_ratio: float | None
    positions: int | None


@dataclass(frozen=True)
class Spread:
    """One figure of the speed probe over its timed runs."""

    median: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class Group:
    key: str
    accuracy: float | None
    ci: tuple[float, float] | None  # 95% Wilson interval
    threshold: float | None  # thresholds.accuracy
    passed: bool
    no_verdict: bool
    undecided: int  # cases an early decision did not run: accuracy is then an upper bound
    cases: int
    passed_cases: int
    reasons: tuple[str, ...]
    fidelity: Fidelity | None
    flips: tuple[Flip, ...]
    outcomes: dict[str, str]  # node id -> outcome (case_outcomes)

    @property
    def bound(self) -> bool:
        return self.undecided > 0 and self.accuracy is not None


@dataclass(frozen=True)
class Row:
    name: str
    size_mb: float
    memory_mb: float | None
    load_seconds: float | None
    tokens_per_second: float | None
    decode_tokens_per_second: float | None
    prompt_tokens_per_second: float | None
    probe: dict[str, Spread]  # figure -> its spread; empty without a probe
    passed: bool
    reasons: tuple[str, ...]
    groups: dict[str, Group]
    fidelity: Fidelity | None
    live_calls: int
    cached_calls: int
    cases: tuple[Case, ...]
    transcripts: bool  # False for a report written before cases carried their calls

    @property
    def flipped(self) -> dict[str, tuple[Flip, ...]]:
        """Case key -> its flips in any group of this variant."""
        out: dict[str, tuple[Flip, ...]] = {}
        for g in self.groups.values():
            for f in g.flips:
                out[f.key] = out.get(f.key, ()) + (f,)
        return out


@dataclass(frozen=True)
class Report:
    model: str
    gate: str
    reference: str | None
    smallest_passing: str | None
    smallest_by_group: dict[str, str | None]
    groups: list[str]
    labels: dict[str, str]  # group key -> its short name
    environment: dict[str, Any]
    incomplete: bool
    baseline_note: str | None
    rows: list[Row] = field(default_factory=list)  # smallest file first, as the report has them

    def label(self, group: str | None) -> str:
        return "(no group)" if group is None else self.labels.get(group, group)

    def row(self, name: str | None) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


class _Obj:
    """A JSON object and where it is in the report; each getter checks its field's type."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ReportError(f"{where or 'report'}: expected an object, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, check: Callable[[object, str], T], default: D) -> T | D:
        value = self.data.get(key)
        return default if value is None else check(value, self.at(key))

    def obj(self, key: str) -> _Obj | None:
        value = self.data.get(key)
        return None if value is None else _Obj(value, self.at(key))

    def seq(self, key: str) -> list[object]:
        return self.get(key, _list, [])

    def items(self, key: str) -> list[tuple[str, object]]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, dict):
            raise ReportError(f"{self.at(key)}: expected an object, got {_kind(value)}")
        return list(value.items())


def _kind(value: object) -> str:
    return "null" if value is None else f"{type(value).__name__} {show(value)}"


def _fail(where: str, expected: str, value: object) -> ReportError:
    return ReportError(f"{where}: expected {expected}, got {_kind(value)}")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "a string", value)
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, "an integer", value)
    return value


def _num(value: object, where: str) -> float | None:
    """A figure; NaN or infinity (a zero-second timing) shows as missing rather than failing
    the whole page."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "a number or null", value)
    return float(value) if math.isfinite(value) else None


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _fail(where, "a list", value)
    return value


def _strs(value: object, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _key(key: str) -> str:
    return f"[{json.dumps(key[:80])}]"


def parse_report(report: object) -> Report:
    """The report's views, or ReportError naming the first field with the wrong type."""
    top = _Obj(report, "")
    if "variants" not in top.data:
        raise ReportError("variants: missing (not a quantgate report?)")
    rows = [_row(_Obj(v, f"variants[{i}]")) for i, v in enumerate(top.seq("variants"))]
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ReportError(f"variants: a variant appears twice: {show(names)}")
    groups = list(top.get("groups", _strs, ()))
    for r in rows:  # a report without the list still has each row's groups
        groups += [g for g in r.groups if g not in groups]
    labels = {g: _str(v, f"group_labels{_key(g)}") for g, v in top.items("group_labels")}
    by_group = {g: None if v is None else _str(v, f"smallest_passing_by_group{_key(g)}")
                for g, v in top.items("smallest_passing_by_group")}
    baseline = top.obj("baseline")
    return Report(
        model=top.get("model", _str, ""),
        gate=top.get("gate", _str, ""),
        reference=top.get("reference", _str, None),
        smallest_passing=top.get("smallest_passing", _str, None),
        smallest_by_group=by_group,
        groups=groups,
        labels=labels,
        environment=dict(top.items("environment")),
        incomplete=top.get("incomplete", _bool, False),
        baseline_note=baseline.get("note", _str, None) if baseline else None,
        rows=rows,
    )


def _row(o: _Obj) -> Row:
    name = o.get("name", _str, "")
    if not name:
        raise ReportError(f"{o.at('name')}: missing")
    size_mb = o.get("size_mb", _num, None)
    if size_mb is None:  # reports before size_mb have the bytes
        size_mb = o.get("size_bytes", _int, 0) / MB
    groups = {g: _group(g, _Obj(v, f"{o.at('groups')}{_key(g)}")) for g, v in o.items("groups")}
    probe = o.obj("probe")
    spreads: dict[str, Spread] = {}
    for figure, value in probe.data.items() if probe else ():
        if isinstance(value, dict):  # the figures; "repeats" is a count
            s = _Obj(value, probe.at(figure) if probe else figure)
            spreads[figure] = Spread(s.get("median", _num, None), s.get("min", _num, None),
                                     s.get("max", _num, None))
    transcripts = "cases" in o.data
    if transcripts:
        cases = tuple(_case(_Obj(c, f"{o.at('cases')}[{i}]"), name) for i, c in enumerate(o.seq("cases")))
    else:  # an older report: outcomes only, keyed by node id
        cases = tuple(Case(nodeid, case_key(nodeid, name), g, outcome, "", ())
                      for g, group in groups.items() for nodeid, outcome in group.outcomes.items())
    return Row(
        name=name,
        size_mb=size_mb,
        memory_mb=o.get("memory_mb", _num, None),
        load_seconds=o.get("load_seconds", _num, None),
        tokens_per_second=o.get("tokens_per_second", _num, None),
        decode_tokens_per_second=o.get("decode_tokens_per_second", _num, None),
        prompt_tokens_per_second=o.get("prompt_tokens_per_second", _num, None),
        probe=spreads,
        passed=o.get("passed", _bool, False),
        reasons=o.get("reasons", _strs, ()),
        groups=groups,
        fidelity=_fidelity(o.obj("fidelity")),
        live_calls=o.get("live_calls", _int, 0),
        cached_calls=o.get("cached_calls", _int, 0),
        cases=cases,
        transcripts=transcripts,
    )


def _group(key: str, o: _Obj) -> Group:
    ci = o.get("accuracy_ci", _list, None)
    interval: tuple[float, float] | None = None
    if ci is not None:
        if len(ci) != 2:
            raise _fail(o.at("accuracy_ci"), "[low, high]", ci)
        low, high = (None if v is None else _num(v, f"{o.at('accuracy_ci')}[{i}]") for i, v in enumerate(ci))
        interval = None if low is None or high is None else (low, high)
    thresholds = o.obj("thresholds")
    return Group(
        key=key,
        accuracy=o.get("accuracy", _num, None),
        ci=interval,
        threshold=thresholds.get("accuracy", _num, None) if thresholds else None,
        passed=o.get("passed", _bool, False),
        no_verdict=o.get("no_verdict", _bool, False),
        undecided=o.get("undecided", _int, 0),
        cases=o.get("cases", _int, 0),
        passed_cases=o.get("passed_cases", _int, 0),
        reasons=o.get("reasons", _strs, ()),
        fidelity=_fidelity(o.obj("fidelity")),
        flips=tuple(_flip(_Obj(f, f"{o.at('flips')}[{i}]")) for i, f in enumerate(o.seq("flips"))),
        outcomes={n: _str(v, f"{o.at('case_outcomes')}{_key(n)}") for n, v in o.items("case_outcomes")},
    )


def _flip(o: _Obj) -> Flip:
    return Flip(key=_str(o.data.get("key"), o.at("key")), against=o.get("against", _str, ""),
                was=o.get("was", _str, ""), now=o.get("now", _str, ""))


def _case(o: _Obj, variant: str) -> Case:
    nodeid = _str(o.data.get("nodeid"), o.at("nodeid"))
    return Case(
        nodeid=nodeid,
        key=o.get("key", _str, None) or case_key(nodeid, variant),
        group=o.get("group", _str, None),
        outcome=_str(o.data.get("outcome"), o.at("outcome")),
        message=o.get("message", _str, ""),
        calls=tuple(_call(_Obj(c, f"{o.at('calls')}[{i}]")) for i, c in enumerate(o.seq("calls"))),
    )


def _call(o: _Obj) -> Call:
    return Call(
        op=o.get("op", _str, ""),
        prompt=o.get("prompt", _str, ""),
        reply=o.get("reply", _str, ""),
        prompt_tokens=o.get("prompt_tokens", _int, 0),
        completion_tokens=o.get("completion_tokens", _int, 0),
        wall_seconds=o.get("wall_seconds", _num, None),
        finish_reason=o.get("finish_reason", _str, None),
        cached=o.get("cached", _bool, False),
        repeat=o.get("repeat", _int, None),
        seed=o.get("seed", _int, None),
        batch=o.get("batch", _int, 1),
        reused=o.get("reused", _bool, False),
    )


def _fidelity(o: _Obj | None) -> Fidelity | None:
    if o is None:
        return None
    return Fidelity(
        mean_kld=o.get("mean_kld", _num, None),
        p99_kld=o.get("p99_kld", _num, None),
        top1_agreement=o.get("top1_agreement", _num, None),
        perplexity_ratio=o.get("perplexity_ratio", _num, None),
        positions=o.get("positions", _int, None),
    )


def environment_lines(env: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's environment as (label, text), the figures' context first."""
    wanted = [("llama-cpp-python", "llama_cpp_python"), ("CPU", "cpu"), ("cores", "cpu_count"),
              ("threads", "threads"), ("llama", "llama"), ("generation", "generation"),
              ("python", "python"), ("pytest", "pytest"), ("platform", "platform")]
    out = []
    for label, key in wanted:
        if env.get(key) is not None:
            value = env[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out.append((label, text[:300]))
    return out
