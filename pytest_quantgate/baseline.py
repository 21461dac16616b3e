"""Committed baselines: what passed last time, and what the run was made of.

The file is for pull-request review: sorted keys, rounded figures, one case per line, and
the same bytes every time it is written from the same results.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .summary import CaseRecord, Summary

SCHEMA = 1


def case_key(nodeid: str, variant: str) -> str:
    """The node id without the variant, so a case matches across variants and runs.

    ``test_qa.py::test_fact[Q4_K_M-capital]`` -> ``test_qa.py::test_fact[capital]``.
    """
    for suffix in (f"@{variant}", "@quantgate"):  # xdist loadgroup suffixes we add
        if nodeid.endswith(suffix):
            nodeid = nodeid[: -len(suffix)]
    if not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid
    head, _, params = nodeid[:-1].partition("[")
    if params == variant:
        return head
    if params.startswith(variant + "-"):
        params = params[len(variant) + 1:]
    elif params.endswith("-" + variant):
        params = params[: -len(variant) - 1]
    else:
        params = params.replace(f"-{variant}-", "-", 1)
    return f"{head}[{params}]"


def case_set_hash(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def build_baseline(summary: Summary, cases: list[CaseRecord], settings_llama: dict[str, Any],
                   settings_generation: dict[str, Any]) -> dict[str, Any]:
    env = summary.environment
    variants: dict[str, Any] = {}
    files: dict[str, str] = {}
    group_cases: dict[str, set[str]] = {}
    for row in summary.rows:
        files[row.name] = row.sha256
        groups: dict[str, Any] = {}
        for g, gr in row.groups.items():
            outcomes = {case_key(n, row.name): o for n, o in gr.case_outcomes.items() if o != "skipped"}
            group_cases.setdefault(g, set()).update(outcomes)
            groups[g] = {
                "accuracy": None if gr.accuracy is None else round(gr.accuracy, 4),
                "passed": gr.passed,
                "cases": dict(sorted(outcomes.items())),
            }
        variants[row.name] = {
            "file_type": row.file_type,
            "size_bytes": row.size_bytes,
            "figures": {
                "load_seconds": _r(row.load_seconds, 2),
                "memory_mb": _r(row.memory_mb, 0),
                "tokens_per_second": _r(row.tokens_per_second, 0),
            },
            "groups": groups,
        }
    return {
        "schema": SCHEMA,
        "fingerprint": {
            "llama_cpp_python": env.get("llama_cpp_python"),
            "llama_cpp_system_info": env.get("llama_cpp_system_info"),
            "llama": dict(settings_llama),
            "generation": dict(settings_generation),
            "files": files,
            "case_sets": {g: case_set_hash(sorted(k)) for g, k in group_cases.items()},
        },
        "variants": variants,
    }


def merge_baseline(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Update ``old`` with ``new``: a run on a subset (``--quant-variants``, ``-k``) replaces the
    (variant, group) entries it measured and keeps the rest, so blessing Q4 does not erase F16."""
    merged: dict[str, Any] = json.loads(json.dumps(old))
    for name, data in new["variants"].items():
        entry = merged["variants"].setdefault(name, {})
        groups = {**entry.get("groups", {}), **data["groups"]}
        entry.update(data)
        entry["groups"] = groups
    fp_old, fp_new = merged.get("fingerprint", {}), new["fingerprint"]
    fp = dict(fp_new)
    fp["files"] = {**fp_old.get("files", {}), **fp_new["files"]}
    fp["case_sets"] = {**fp_old.get("case_sets", {}), **fp_new["case_sets"]}
    merged["fingerprint"] = fp
    merged["schema"] = SCHEMA
    return merged


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_baseline(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data))
    os.replace(tmp, path)


class BaselineError(Exception):
    pass


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON (line {exc.lineno}): rewrite it with "
                            "pytest --quant-update-baseline") from exc
    if (not isinstance(data, dict) or data.get("schema") != SCHEMA
            or not isinstance(data.get("variants"), dict) or not isinstance(data.get("fingerprint"), dict)):
        raise BaselineError(f"{path}: not a quantgate baseline (schema {SCHEMA}); rewrite it with "
                            "pytest --quant-update-baseline")
    return data


@dataclass
class GroupComparison:
    """This run's cases of one (group, variant) against the baseline's."""

    regressions: list[str] = field(default_factory=list)  # passed before, miss/fail now
    fixes: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # not in the baseline: left out
    removed: list[str] = field(default_factory=list)
    common: int = 0
    baseline_accuracy: float | None = None  # on the common cases
    accuracy: float | None = None

    @property
    def drop(self) -> float:
        if self.baseline_accuracy is None or self.accuracy is None:
            return 0.0
        return self.baseline_accuracy - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "regressions": self.regressions, "fixes": self.fixes, "added": self.added,
            "removed": self.removed, "common": self.common,
            "baseline_accuracy": self.baseline_accuracy, "accuracy": self.accuracy,
            "drop": self.drop,
        }


def compare_group(baseline_cases: dict[str, str], now: dict[str, str]) -> GroupComparison:
    """``{case key: outcome}`` before and now; skipped cases are not compared."""
    before = {k: o for k, o in baseline_cases.items() if o != "skipped"}
    after = {k: o for k, o in now.items() if o != "skipped"}
    common = sorted(set(before) & set(after))
    cmp = GroupComparison(
        added=sorted(set(after) - set(before)),
        removed=sorted(set(before) - set(after)),
        common=len(common),
    )
    for k in common:
        was, now_ok = before[k] == "passed", after[k] == "passed"
        if was and not now_ok:
            cmp.regressions.append(k)
        elif now_ok and not was:
            cmp.fixes.append(k)
    if common:
        cmp.baseline_accuracy = sum(before[k] == "passed" for k in common) / len(common)
        cmp.accuracy = sum(after[k] == "passed" for k in common) / len(common)
    return cmp


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human lines for what changed underneath the results, e.g. a new llama.cpp."""
    out: list[str] = []
    for key, label in (("llama_cpp_python", "llama-cpp-python"),):
        if old.get(key) != new.get(key):
            out.append(f"{label} {old.get(key)} -> {new.get(key)}")
    if old.get("llama_cpp_system_info") != new.get("llama_cpp_system_info"):
        out.append("llama.cpp system info changed")
    for key in ("llama", "generation"):
        if old.get(key) != new.get(key):
            out.append(f"{key} parameters changed: {old.get(key)} -> {new.get(key)}")
    of, nf = old.get("files", {}), new.get("files", {})
    for name in sorted(set(of) & set(nf)):
        if of[name] != nf[name]:
            out.append(f"{name} file changed")
    for g in sorted(set(old.get("case_sets", {})) & set(new.get("case_sets", {}))):
        if old["case_sets"][g] != new["case_sets"][g]:
            out.append(f"{g}: case set changed")
    return out
