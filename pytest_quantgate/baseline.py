"""Committed baselines: what passed last time, under which thresholds, and what the run was
made of.

The file is for pull-request review: sorted keys, one case per line, no timings, and the same
bytes every time it is written from the same results.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

from .atomic import write_text
from .records import CaseRecord, case_key
from .summary import Summary

SCHEMA = 1


def case_set_hash(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def build_baseline(summary: Summary, cases: list[CaseRecord], settings_llama: dict[str, Any],
                   settings_generation: dict[str, Any], reference: str | None = None) -> dict[str, Any]:
    """The document to commit: outcomes, accuracies, thresholds, the fingerprint, and the two
    figures that drift gates compare with (the probe's decode speed, when it ran, and memory).
    Those move between equal runs, so a bless keeps the stored ones while the new ones are
    within measured noise (``_within_noise``); load time and single-pass speeds stay in the
    JSON report. Blessing an unchanged setup twice writes the same bytes."""
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
                "thresholds": dict(sorted(gr.thresholds.items())),
                "cases": dict(sorted(outcomes.items())),
            }
            if gr.accuracy_bound != "point":
                groups[g]["accuracy_bound"] = gr.accuracy_bound
        variants[row.name] = {"file_type": row.file_type, "size_bytes": row.size_bytes, "groups": groups}
        decode = (row.probe or {}).get("decode_tokens_per_second")
        if decode:  # the probe ran: the figures max_speed_drop compares with
            variants[row.name]["speed"] = {k: round(decode[k], 1) for k in ("median", "min", "max")}
        if row.memory_mb is not None:
            variants[row.name]["memory_mb"] = round(row.memory_mb, 1)
    return {
        "schema": SCHEMA,
        "reference": reference,
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


def merge_baseline(old: dict[str, Any], new: dict[str, Any], *, keep_unseen: bool = True,
                   skipped: Mapping[str, Mapping[str, Iterable[str]]] | None = None) -> dict[str, Any]:
    """Update ``old`` with ``new``, case by case.

    Variants and groups this run did not measure are kept whole (blessing Q4 does not erase
    F16). Within a measured group, this run's outcomes replace the old ones; an old case the
    run did not evaluate is kept when it was skipped now (``skipped[variant][group]``) or when
    the run saw only part of the suite (``keep_unseen``: -k, -m, --deselect, node ids), so its
    regressions are still checked next time. A full run drops cases that no longer exist.
    """
    merged: dict[str, Any] = json.loads(json.dumps(old))
    case_sets: dict[str, set[str]] = {}
    for name, data in new["variants"].items():
        entry = merged["variants"].setdefault(name, {})
        groups: dict[str, Any] = dict(entry.get("groups", {}))
        for g, fresh in data["groups"].items():
            before = groups.get(g, {}).get("cases", {})
            kept = set(before) if keep_unseen else set((skipped or {}).get(name, {}).get(g, ()))
            cases = {k: o for k, o in before.items() if k in kept}
            cases.update(fresh["cases"])
            passed = sum(o == "passed" for o in cases.values())
            groups[g] = {**fresh, "cases": dict(sorted(cases.items())),
                         "accuracy": round(passed / len(cases), 4) if cases else None}
        sticky = _within_noise(entry, data)
        entry.update(data)
        entry.update(sticky)
        entry["groups"] = groups
        entry.pop("figures", None)  # older files kept timings; they move between equal runs
    for data in merged["variants"].values():
        for g, group in data.get("groups", {}).items():
            if any(g in v["groups"] for v in new["variants"].values()):
                case_sets.setdefault(g, set()).update(group.get("cases", {}))
    fp_old, fp_new = merged.get("fingerprint", {}), new["fingerprint"]
    fp = dict(fp_new)
    fp["files"] = {**fp_old.get("files", {}), **fp_new["files"]}
    fp["case_sets"] = {**fp_old.get("case_sets", {}),
                       **{g: case_set_hash(sorted(k)) for g, k in case_sets.items()}}
    merged["fingerprint"] = fp
    merged["schema"] = SCHEMA
    merged["reference"] = new.get("reference")
    for data in merged["variants"].values():
        for group in data.get("groups", {}).values():
            group.pop("passed", None)  # a verdict may flip on a speed gate: not a committed fact
    return merged


def _within_noise(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The old figures where the new ones are within measured noise of them, so blessing an
    unchanged setup writes the same bytes: a decode median inside the stored min..max, a memory
    figure within 2 MB or 2%."""
    keep: dict[str, Any] = {}
    o, n = old.get("speed"), new.get("speed")
    if o and n and o["min"] <= n["median"] <= o["max"]:
        keep["speed"] = o
    om, nm = old.get("memory_mb"), new.get("memory_mb")
    if om is not None and nm is not None and abs(nm - om) <= max(2.0, 0.02 * om):
        keep["memory_mb"] = om
    return keep


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_baseline(path: Path, data: dict[str, Any]) -> None:
    """Atomic; raises OSError (nothing left behind) when the file cannot be written."""
    write_text(path, dumps(data))


class BaselineError(Exception):
    """An unreadable baseline file; the message names the file, the key path and the fix."""


REWRITE = "rewrite it with pytest --quant-update-baseline"
OUTCOMES = ("passed", "miss", "failed", "error")  # "skipped" is never written


def read_baseline(path: Path) -> dict[str, Any]:
    """Read and check a baseline file against the shape ``build_baseline`` writes.

    Everything downstream (``merge_baseline``, ``compare_group``, ``fingerprint_changes``, the
    session) relies on that shape, so any deviation is a ``BaselineError`` naming the key path.
    Keys this version does not know are tolerated; missing or mistyped ones are not.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM that an editor added
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                            f"{exc.start}); {REWRITE}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON (line {exc.lineno}); {REWRITE}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer over Python's digit limit
        raise BaselineError(f"{path}: not valid JSON ({_clip(str(exc))}); {REWRITE}") from exc
    if (not isinstance(data, dict) or "schema" not in data
            or "variants" not in data or "fingerprint" not in data):
        raise BaselineError(f"{path}: not a quantgate baseline (schema {SCHEMA}); {REWRITE}")
    try:
        _check_document(data)
    except _Invalid as exc:
        raise BaselineError(f"{path}: {exc.where}: {exc.problem}; {exc.fix}") from None
    return data


# -- the shape check --------------------------------------------------------------------------
#
# A hand-written walk over the schema ``build_baseline`` writes (SCHEMA 1):
#
#   schema: 1
#   reference: string|null                                       (optional: older files lack it)
#   fingerprint: {llama_cpp_python: string|null, llama_cpp_system_info: string|null,
#                 llama: {key: scalar}, generation: {key: scalar},
#                 files: {variant: string}, case_sets: {group: string}}
#   variants: {variant: {file_type: string, size_bytes: integer >= 0,
#                        speed: {median, min, max: number}  (optional: the probe's decode tok/s)
#                        memory_mb: number                  (optional)
#                        figures: {key: number|null}                  (optional, older files only)
#                        groups: {group: {accuracy: number 0..1|null,
#                                         thresholds: {key: number}    (optional: older files lack it)
#                                         accuracy_bound: lower|upper  (optional: point when absent)
#                                         passed: boolean              (optional, older files only)
#                                         cases: {case key: passed|miss|failed|error}}}}}


class _Invalid(Exception):
    def __init__(self, where: str, problem: str, fix: str = REWRITE) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.fix = where, problem, fix


class _DuplicateKeys(dict[str, Any]):
    """An object in which a key appeared more than once (json keeps the last silently)."""

    duplicate: str = ""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            dup = _DuplicateKeys(pairs)
            dup.duplicate = key
            return dup
        out[key] = value
    return out


def _check_document(data: dict[str, Any]) -> None:
    schema = data["schema"]
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
        raise _Invalid("schema", f"{schema} is newer than this pytest-quantgate reads ({SCHEMA})",
                       f"upgrade pytest-quantgate or {REWRITE}")
    if schema != SCHEMA or isinstance(schema, bool):
        raise _Invalid("schema", f"expected {SCHEMA}, got {_show(schema)}")
    _object(data, "")

    if data.get("reference") is not None:
        _string(data["reference"], "reference")
    fp = _object(data["fingerprint"], "fingerprint", ("llama_cpp_python", "llama_cpp_system_info",
                                                      "llama", "generation", "files", "case_sets"))
    for key in ("llama_cpp_python", "llama_cpp_system_info"):
        _string(fp[key], _at("fingerprint", key), nullable=True)
    for key in ("llama", "generation"):
        where = _at("fingerprint", key)
        for name, value in _object(fp[key], where).items():
            _scalar(value, _at(where, name))
    for key in ("files", "case_sets"):
        where = _at("fingerprint", key)
        for name, value in _object(fp[key], where).items():
            _string(value, _at(where, name))

    for name, variant in _object(data["variants"], "variants").items():
        where = _at("variants", name)
        v = _object(variant, where, ("file_type", "size_bytes", "groups"))
        _string(v["file_type"], _at(where, "file_type"))
        size = v["size_bytes"]
        if not (_is_number(size) and isinstance(size, int) and size >= 0):
            raise _Invalid(_at(where, "size_bytes"), f"expected a whole number >= 0, got {_show(size)}")
        if "speed" in v:
            sw = _at(where, "speed")
            speed = _object(v["speed"], sw, ("median", "min", "max"))
            for key in ("median", "min", "max"):
                _number(speed[key], _at(sw, key))
        if "memory_mb" in v:
            _number(v["memory_mb"], _at(where, "memory_mb"))
        if "figures" in v:  # written by earlier versions; read, never written again
            figures = _at(where, "figures")
            for key, value in _object(v["figures"], figures).items():
                _number(value, _at(figures, key), nullable=True)
        groups = _at(where, "groups")
        for g, group in _object(v["groups"], groups).items():
            gw = _at(groups, g)
            gr = _object(group, gw, ("accuracy", "cases"))
            acc = gr["accuracy"]
            if acc is not None and not (_is_number(acc) and 0 <= acc <= 1):
                raise _Invalid(_at(gw, "accuracy"), f"expected a number from 0 to 1 or null, got {_show(acc)}")
            if "passed" in gr and not isinstance(gr["passed"], bool):
                raise _Invalid(_at(gw, "passed"), f"expected a boolean, got {_show(gr['passed'])}")
            if "accuracy_bound" in gr and gr["accuracy_bound"] not in ("lower", "point", "upper"):
                raise _Invalid(_at(gw, "accuracy_bound"),
                               f"expected lower, point or upper, got {_show(gr['accuracy_bound'])}")
            if "thresholds" in gr:
                tw = _at(gw, "thresholds")
                for key, value in _object(gr["thresholds"], tw).items():
                    _number(value, _at(tw, key))
            cases = _at(gw, "cases")
            for key, outcome in _object(gr["cases"], cases).items():
                if not isinstance(outcome, str) or outcome not in OUTCOMES:
                    raise _Invalid(_at(cases, key),
                                   f"expected {', '.join(OUTCOMES[:-1])} or {OUTCOMES[-1]}, "
                                   f"got {_show(outcome)}")


def _object(value: Any, where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    shown = where or "the document"
    if not isinstance(value, dict):
        raise _Invalid(shown, f"expected an object, got {_show(value)}")
    if isinstance(value, _DuplicateKeys):
        raise _Invalid(shown, f"key {_clip(json.dumps(value.duplicate))} appears more than once")
    for key in required:
        if key not in value:
            raise _Invalid(_at(where, key), "missing")
    return value


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _number(value: Any, where: str, *, nullable: bool = False) -> None:
    if not (_is_number(value) or (value is None and nullable)):
        raise _Invalid(where, f"expected a finite number{' or null' if nullable else ''}, got {_show(value)}")


def _string(value: Any, where: str, *, nullable: bool = False) -> None:
    if not (isinstance(value, str) or (value is None and nullable)):
        raise _Invalid(where, f"expected a string{' or null' if nullable else ''}, got {_show(value)}")


def _scalar(value: Any, where: str) -> None:
    """A llama or generation parameter as quantgate.yaml allows them: no nesting, no NaN."""
    if value is None or isinstance(value, (str, bool)) or _is_number(value):
        return
    raise _Invalid(where, f"expected a string, number, boolean or null, got {_show(value)}")


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _at(where: str, key: str) -> str:
    """``variants.Q2_K``; other keys are quoted, long ones cut: ``groups["test_qa.py"]``."""
    if _IDENTIFIER.match(key) and len(key) <= 60:
        return f"{where}.{key}" if where else key
    return f"{where}[{_clip(json.dumps(key))}]"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # pragma: no cover - json.loads makes nothing else


def _show(value: Any) -> str:
    """``array``, ``string "pass"``, ``number NaN``: the JSON type, and the value if it is short."""
    kind = _kind(value)
    if isinstance(value, (list, dict)) or value is None:
        return kind
    return f"{kind} {_clip(json.dumps(value))}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
