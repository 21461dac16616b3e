"""``quantgate merge``: JSON reports from separate jobs (one variant per CI job) -> the summary,
smallest passing variant and gate a single run over the same variants gives.

Every file is untrusted data: parsed and checked field by field (``report_check``), and rebuilt
on its own (its recorded verdicts must follow from its
recorded groups and cases) before any two files are compared. Reports that do not describe
the same experiment (another file under a name, another llama.cpp, other settings, case set or
rubric, a variant twice) are refused with one line naming both files: merged, they would print
an answer that no single run could give. Verdicts are not re-judged: each (group, variant) was
judged where its evidence was measured, and ``summary.build_summary`` (the code a live run
uses) turns them into rows and the smallest passing variant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .display import show
from .records import CaseRecord, Verdict, case_key, case_label
from .render import render_lines, render_markdown
from .report import OTHER_FAILURES_KEY, SHA256_KEY, STATS_KEY, RunRecord, document
from .report_check import InvalidReport, read_report, validate
from .summary import Summary, build_summary

UNGROUPED = "(tests without a rubric)"  # how the case-set check names cases outside groups

# Row keys that are not the variant's measured figures; every other key of a row is passed to
# build_summary as stats, so a figure added later survives a merge without this module knowing it.
_ROW_STRUCTURE = frozenset({"name", "file_type", "path", "sha256", "size_bytes", "size_mb", "groups",
                            "failed_tests", "passed", "reasons", "fidelity", "cases", STATS_KEY})


class MergeError(Exception):
    """Why reports cannot be merged: one line naming the file or files."""


@dataclass(frozen=True)
class Shard:
    """One validated report and the summary inputs rebuilt from it."""

    name: str  # the path as given: what messages show
    data: dict[str, Any]
    variants: dict[str, dict[str, Any]]  # name -> build_summary's variant info (with stats)
    cases: list[CaseRecord]
    verdicts: dict[tuple[str, str], Verdict]

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.data["variants"]
        return rows

    @property
    def has_cases(self) -> bool:
        """Rows list every case: ungrouped ones and messages are known too."""
        return all("cases" in r for r in self.rows)

    @property
    def other_failures(self) -> int:
        return int(self.data.get(OTHER_FAILURES_KEY, 0))


@dataclass(frozen=True)
class Merged:
    summary: Summary
    document: dict[str, Any]  # the merged report: a report like any other
    passed: bool  # the gate, as the exit code of a single run would say it


def merge(paths: Sequence[Path]) -> Merged:
    """Read, validate and merge ``paths``; raises MergeError with one line."""
    seen: dict[Path, str] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise MergeError(f"{p}: given twice (as {seen[key]} too)")
        seen[key] = str(p)
    shards = [load_shard(p) for p in paths]
    check_compatible(shards)
    return merge_shards(shards)


# -- one file ------------------------------------------------------------------------------------
def load_shard(path: Path) -> Shard:
    try:
        data = read_report(path)
        validate(str(path), data)
    except InvalidReport as exc:
        raise MergeError(str(exc)) from None
    return shard(str(path), data)


def shard(name: str, data: dict[str, Any]) -> Shard:
    """A checked report's summary inputs, rebuilt; its own summary, rebuilt alone, must say what
    it recorded (a hand-edited or inconsistent report is refused here, not merged)."""
    variants: dict[str, dict[str, Any]] = {}
    cases: list[CaseRecord] = []
    verdicts: dict[tuple[str, str], Verdict] = {}
    for row in data["variants"]:
        v = row["name"]
        stats = {**row.get(STATS_KEY, {}), **{k: x for k, x in row.items() if k not in _ROW_STRUCTURE}}
        variants[v] = {"name": v, "path": row.get("path", ""), "file_type": row.get("file_type", ""),
                       "sha256": row["sha256"], "size_bytes": row["size_bytes"], "stats": stats}
        cases += _row_cases(row)
    for g in data["groups"]:  # in the report's group order: build_summary keeps first appearance
        for row in data["variants"]:
            if g in row["groups"]:
                verdicts[(g, row["name"])] = Verdict.from_dict(row["groups"][g])
    s = Shard(name, data, variants, cases, verdicts)
    _check_rebuilds(s)
    return s


def _row_cases(row: dict[str, Any]) -> list[CaseRecord]:
    v = row["name"]
    if "cases" in row:
        return [CaseRecord(c["nodeid"], v, c["group"], c["outcome"], c["message"], tuple(c.get("calls", ())),
                           repeats=tuple(c.get("repeats", {}).get("outcomes", ())))
                for c in row["cases"]]
    # An older report without the row's cases: grouped cases from the groups, ungrouped failures from
    # failed_tests, failures first in their recorded order (the row's reason names the first).
    grouped = {nodeid: (g, o) for g, gr in row["groups"].items() for nodeid, o in gr["case_outcomes"].items()}
    out = [CaseRecord(n, v, *grouped.get(n, (None, "failed"))) for n in row["failed_tests"]]
    failed = set(row["failed_tests"])
    return out + [CaseRecord(n, v, g, o) for n, (g, o) in grouped.items() if n not in failed]


def _check_rebuilds(s: Shard) -> None:
    where = f"{s.name}: "
    try:
        alone = _build(s.variants, s.cases, s.verdicts, s.data["gate"], s.data["incomplete"],
                       reference=s.data["reference"])
        render_lines(alone)  # what the renderers would trip over shows here, naming this file
        render_markdown(alone)
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise MergeError(f"{where}malformed report: {type(exc).__name__}: {show(str(exc))}") from None
    rebuilt = {r.name: r for r in alone.rows}
    hint = "" if s.has_cases else " (an older report without its rows' cases: rerun with this version)"
    for row in s.rows:
        got = rebuilt.get(row["name"])
        recorded = (row["passed"], row["reasons"], row["failed_tests"],
                    {g: gr["case_outcomes"] for g, gr in row["groups"].items()})
        if got is None or recorded != (got.passed, got.reasons, got.failed_tests,
                                       {g: gr.case_outcomes for g, gr in got.groups.items()}):
            said = "nothing" if got is None else ("pass" if got.passed else f"FAIL: {got.reasons[0]}")
            raise MergeError(f"{where}variant {row['name']}: the recorded verdict "
                             f"({'pass' if row['passed'] else 'FAIL'}) does not follow from its "
                             f"recorded groups and cases ({show(said)}){hint}")
    if alone.smallest_passing != s.data["smallest_passing"]:
        raise MergeError(f"{where}smallest_passing is {show(s.data['smallest_passing'])} but its rows "
                         f"say {show(alone.smallest_passing)}")


# -- several files -------------------------------------------------------------------------------
def check_compatible(shards: Sequence[Shard]) -> None:
    """Refuse reports that do not describe the same experiment; MergeError names both files."""
    _duplicates(shards)
    first = shards[0]
    for other in shards[1:]:
        for label, get in _FINGERPRINT:
            a, b = get(first.data), get(other.data)
            if a != b:
                raise MergeError(f"{first.name} and {other.name}: different {label}: {_difference(a, b)}")
    _same_files(shards)
    _same_cases(shards)
    _same_rubric(shards)


def _env(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d["environment"].get(key)


# What must agree for the verdicts of two runs to be as if from one. Not the CPU or the
# platform: speed and memory gates were judged where they were measured.
_FINGERPRINT: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("model", lambda d: d["model"]),
    ("reference", lambda d: d["reference"]),
    ("gate (--quant-gate)", lambda d: d["gate"]),
    ("pytest-quantgate version", lambda d: d.get("quantgate")),
    ("llama-cpp-python version", _env("llama_cpp_python")),
    ("llama.cpp system info", _env("llama_cpp_system_info")),
    ("llama settings", _env("llama")),
    ("generation settings", _env("generation")),
)


def _difference(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted({k for k in {*a, *b} if a.get(k, ...) != b.get(k, ...)})
        return "; ".join(f"{k} {_shown(a, k)} vs {_shown(b, k)}" for k in keys[:4]) + (
            f"; and {len(keys) - 4} more" if len(keys) > 4 else "")
    return f"{show(a)} vs {show(b)}"


def _shown(d: dict[str, Any], key: str) -> str:
    return show(d[key]) if key in d else "unset"


def _duplicates(shards: Sequence[Shard]) -> None:
    where: dict[str, str] = {}
    for s in shards:
        for row in s.rows:
            if row["name"] in where:
                raise MergeError(f"{where[row['name']]} and {s.name}: variant {row['name']} is in both "
                                 "(merge one report per variant)")
            where[row["name"]] = s.name


def _same_files(shards: Sequence[Shard]) -> None:
    """One file per name: every report's preflighted hashes (the reference's too, selected or
    not: its file shapes reference and fidelity gates) and its rows' hashes."""
    seen: dict[str, tuple[str, str]] = {}  # name -> (sha256, report)
    for s in shards:
        hashes = dict(s.data.get(SHA256_KEY, {}))
        hashes.update({r["name"]: r["sha256"] for r in s.rows if r["sha256"]})
        for name, digest in hashes.items():
            if name in seen and seen[name][0] != digest:
                raise MergeError(f"{seen[name][1]} and {s.name}: variant {name} is a different file "
                                 f"(sha256 {seen[name][0][:12]} vs {digest[:12]})")
            seen.setdefault(name, (digest, s.name))


def case_sets(s: Shard) -> dict[str, set[str]]:
    """Group -> its case keys (node ids without the variant), over every row of the report."""
    out: dict[str, set[str]] = {}
    for row in s.rows:
        for g, gr in row["groups"].items():
            out.setdefault(g, set()).update(case_key(n, row["name"]) for n in gr["case_outcomes"])
    for c in s.cases:
        if c.group is not None:
            out.setdefault(c.group, set()).add(case_key(c.nodeid, c.variant))
        elif s.has_cases:
            out.setdefault(UNGROUPED, set()).add(case_key(c.nodeid, c.variant))
    return out


def _same_cases(shards: Sequence[Shard]) -> None:
    """Complete reports must have run the same cases; an incomplete one a subset of them (its
    run stopped early: the merged summary says incomplete)."""
    complete = [s for s in shards if not s.data["incomplete"]]
    if not complete:
        return
    ref = complete[0]
    want = case_sets(ref)
    for s in shards:
        if s is ref:
            continue
        have = case_sets(s)
        if not (ref.has_cases and s.has_cases):  # ungrouped cases known on one side only
            have.pop(UNGROUPED, None)
            want_here = {g: k for g, k in want.items() if g != UNGROUPED}
        else:
            want_here = want
        for g in sorted({*want_here, *have}):
            only_ref = want_here.get(g, set()) - have.get(g, set())
            only_s = have.get(g, set()) - want_here.get(g, set())
            if only_s or (only_ref and not s.data["incomplete"]):
                raise MergeError(f"{ref.name} and {s.name}: different case sets: {g}: "
                                 f"{_only(only_ref, ref.name)}, {_only(only_s, s.name)}")


def _only(keys: set[str], name: str) -> str:
    shown = ", ".join(case_label(k) for k in sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} only in {name}" + (f" ({shown})" if keys else "")


def _same_rubric(shards: Sequence[Shard]) -> None:
    """The same group judged by the same thresholds everywhere."""
    seen: dict[str, tuple[Any, str]] = {}
    for s in shards:
        for row in s.rows:
            for g, gr in row["groups"].items():
                rubric = {**gr.get("thresholds", {}), "accuracy_bound": gr.get("accuracy_bound", "point")}
                if g in seen and seen[g][0] != rubric:
                    raise MergeError(f"{seen[g][1]} and {s.name}: different rubric for {g}: "
                                     f"{_difference(seen[g][0], rubric)}")
                seen.setdefault(g, (rubric, s.name))


def merge_shards(shards: Sequence[Shard]) -> Merged:
    """Compatible shards -> the merged summary, document and gate."""
    first = shards[0]
    groups: list[str] = []
    for s in shards:
        groups += [g for g in s.data["groups"] if g not in groups]
    verdicts = {k: v for g in groups for s in shards for k, v in s.verdicts.items() if k[0] == g}
    variants = {n: info for s in shards for n, info in s.variants.items()}
    cases = [c for s in shards for c in s.cases]
    summary = _build(variants, cases, verdicts, first.data["gate"], any(s.data["incomplete"] for s in shards),
                     first.data["environment"], first.data["reference"])
    notes = [n for n in dict.fromkeys(s.data.get("baseline", {}).get("note") for s in shards) if n]
    summary.baseline_note = "; ".join(notes) or None
    summary.baseline_changes = list(dict.fromkeys(
        c for s in shards for c in s.data.get("baseline", {}).get("changes", [])))
    hashes = {n: d for s in shards for n, d in s.data.get(SHA256_KEY, {}).items()}
    hashes.update({n: str(info["sha256"]) for n, info in variants.items() if info["sha256"]})
    other = sum(s.other_failures for s in shards)
    run = RunRecord(hashes, {n: info["stats"] for n, info in variants.items()}, other)
    doc = document(summary, model=first.data["model"], config=str(first.data.get("config", "")),
                   reference=first.data["reference"], run=run)
    doc["merged_from"] = [s.name for s in shards]
    return Merged(summary, doc, gate_passed(summary, other))


def _build(variants: dict[str, dict[str, Any]], cases: list[CaseRecord],
           verdicts: dict[tuple[str, str], Verdict], gate: str, incomplete: bool,
           environment: dict[str, Any] | None = None, reference: str | None = None) -> Summary:
    return build_summary(variants=variants, cases=cases, verdicts=verdicts, gate=gate,
                         incomplete=incomplete, environment=environment, reference=reference)


def gate_passed(summary: Summary, other_failures: int = 0) -> bool:
    """What a single run's exit code would say: ``all``, every variant passes; ``any``, one
    does. An incomplete run, or failures outside variants, never pass."""
    if summary.incomplete or other_failures or not summary.rows:
        return False
    if summary.gate == "any":
        return summary.smallest_passing is not None
    return all(r.passed for r in summary.rows)
