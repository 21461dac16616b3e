"""A saved report as untrusted data: read as strict JSON and checked field by field against
the annotations of the summary's own dataclasses (``VariantRow``, ``GroupResult``), so a
field added to them is checked without this module changing. Whatever reads a report file
that it did not just write (``quantgate merge``) checks it here first; the first problem is
one line naming the file and the field."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

from .config import GATES
from .constants import MB
from .display import show
from .records import OUTCOMES
from .report import OTHER_FAILURES_KEY, SCHEMA_VERSION, SHA256_KEY, STATS_KEY
from .summary import GroupResult, VariantRow

MAX_REPORT_BYTES = 256 * MB  # far above a real one (the example's 7 rungs with transcripts: ~2 MB)

# The nested dicts the renderer and fidelity pooling index into: key -> type, all required.
_BASELINE = {"regressions": list[str], "fixes": list[str], "added": list[str], "removed": list[str]}
_BASELINE_OPTIONAL = {"was": dict[str, str]}
_VS_REFERENCE = {"cases": int, "lost": int, "gained": int, "drop": float, "p_value": float,
                 "underpowered": bool}
_FIDELITY = {"reference": str, "mean_kld": float, "p99_kld": float, "top1_agreement": float,
             "perplexity_ratio": float}
_TOP = {"schema": int, "model": str, "reference": str | None, "gate": str, "incomplete": bool,
        "environment": dict[str, Any], "groups": list[str], "smallest_passing": str | None,
        "variants": list[dict[str, Any]]}
_TOP_OPTIONAL = {"quantgate": str, "config": str, "baseline": dict[str, Any],
                 SHA256_KEY: dict[str, str], OTHER_FAILURES_KEY: int}
_CASE = {"nodeid": str, "group": str | None, "outcome": str, "message": str}
_CASE_OPTIONAL = {"calls": list[dict[str, Any]],  # transcripts: the Markdown and HTML show them
                  "repeats": dict[str, Any]}  # a case run over repeats: each repeat's outcome


class InvalidReport(Exception):
    """What is wrong with a report file: one line naming the file and the field."""


def read_report(path: Path) -> dict[str, Any]:
    """The file as a JSON object, or InvalidReport naming it. Strict JSON: no NaN or Infinity."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise InvalidReport(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise InvalidReport(f"{path}: over {MAX_REPORT_BYTES // MB} MB, too large to be a quantgate report")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InvalidReport(f"{path}: not a quantgate report (not UTF-8 text)") from None
    except ValueError as exc:  # JSONDecodeError, and the constants refused above
        raise InvalidReport(f"{path}: not a quantgate report (invalid JSON: {exc})") from None
    except RecursionError:
        raise InvalidReport(f"{path}: not a quantgate report (JSON nested too deeply)") from None
    if not isinstance(data, dict):
        raise InvalidReport(f"{path}: not a quantgate report (a JSON {_kind(data)}, expected an object)")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(name: str, data: dict[str, Any]) -> None:
    """Every field the summary code reads, with its type; InvalidReport names the first that is not."""
    where = f"{name}: "
    if "schema" not in data or "variants" not in data:
        raise InvalidReport(f"{where}not a quantgate report (no schema or variants; written by pytest --quant-report?)")
    if data["schema"] != SCHEMA_VERSION or isinstance(data["schema"], bool):
        raise InvalidReport(f"{where}report schema {show(data['schema'])}; this quantgate reads schema {SCHEMA_VERSION}")
    _fields(where, data, _TOP, required=True)
    _fields(where, data, _TOP_OPTIONAL, required=False)
    if data["gate"] not in GATES:
        raise InvalidReport(f"{where}gate: expected all or any, got {show(data['gate'])}")
    for key in ("llama", "generation"):
        if not isinstance(data["environment"].get(key, {}), dict):
            raise InvalidReport(f"{where}environment.{key}: expected an object")
    baseline = data.get("baseline", {})
    _fields(f"{where}baseline.", baseline, {"note": str | None, "changes": list[str]}, required=False)
    if data.get(OTHER_FAILURES_KEY, 0) < 0:
        raise InvalidReport(f"{where}{OTHER_FAILURES_KEY}: expected a count")
    names: set[str] = set()
    for i, row in enumerate(data["variants"]):
        _row(f"{where}variants[{i}]", row, data["groups"])
        if row["name"] in names:
            raise InvalidReport(f"{where}variant {row['name']} has two rows")
        names.add(row["name"])


def _row(where: str, row: dict[str, Any], groups: list[str]) -> None:
    # groups are checked one by one below, so that a message names the field
    hints = {**_hints(VariantRow), "groups": dict[str, dict[str, Any]]}
    required = ("name", "sha256", "size_bytes", "groups", "failed_tests", "passed", "reasons")
    _fields(f"{where}.", row, {k: hints[k] for k in required}, required=True)
    _fields(f"{where}.", row, {k: h for k, h in hints.items() if k not in required}, required=False)
    if not row["name"] or row["size_bytes"] < 0:
        raise InvalidReport(f"{where}: expected a variant name and a file size")
    v = row["name"]
    where = f"{where} ({v})"
    group_hints = _hints(GroupResult)
    group_required = ("group", "variant", "passed", "reasons", "case_outcomes")
    for g, gr in row["groups"].items():
        at = f"{where}.groups[{show(g)}]"
        _fields(f"{at}.", gr, {k: group_hints[k] for k in group_required}, required=True)
        _fields(f"{at}.", gr, group_hints, required=False)
        if gr["group"] != g or gr["variant"] != v or g not in groups:
            raise InvalidReport(f"{at}: names another group or variant, or a group the report does not list")
        if not set(gr["case_outcomes"].values()) <= set(OUTCOMES):
            raise InvalidReport(f"{at}.case_outcomes: expected outcomes among {', '.join(OUTCOMES)}")
        if gr.get("accuracy_ci") is not None and len(gr["accuracy_ci"]) != 2:
            raise InvalidReport(f"{at}.accuracy_ci: expected [low, high]")
        for key, shape in (("baseline", _BASELINE), ("vs_reference", _VS_REFERENCE)):
            if gr.get(key) is not None:
                _fields(f"{at}.{key}.", gr[key], shape, required=True)
        if gr.get("baseline") is not None:
            _fields(f"{at}.baseline.", gr["baseline"], _BASELINE_OPTIONAL, required=False)
        _fidelity(f"{at}.fidelity", gr.get("fidelity"))
    for j, c in enumerate(row.get("cases", [])):  # a list of objects: checked with the row
        _fields(f"{where}.cases[{j}].", c, _CASE, required=True)
        _fields(f"{where}.cases[{j}].", c, _CASE_OPTIONAL, required=False)
        if c["outcome"] not in OUTCOMES or (c["group"] is not None and c["group"] not in groups):
            raise InvalidReport(f"{where}.cases[{j}]: unknown outcome or group")
        reps = c.get("repeats", {}).get("outcomes", [])
        if not isinstance(reps, list) or not all(o in OUTCOMES for o in reps):
            raise InvalidReport(f"{where}.cases[{j}].repeats.outcomes: expected a list of outcomes")
    if not isinstance(row.get(STATS_KEY, {}), dict):
        raise InvalidReport(f"{where}.{STATS_KEY}: expected an object")


def _fidelity(where: str, fid: Any) -> None:
    """Pooling and rendering read these only when positions were scored."""
    if fid is None:
        return
    _fields(f"{where}.", fid, {"positions": int}, required=True)
    if fid["positions"] < 0:
        raise InvalidReport(f"{where}.positions: expected a count")
    if fid["positions"]:
        _fields(f"{where}.", fid, _FIDELITY, required=True)
        _fields(f"{where}.", fid, {"mean_nll": float | None, "source": str}, required=False)
        if fid.get("mean_nll") is not None:
            _fields(f"{where}.", fid, {"ref_mean_nll": float}, required=True)


def _fields(where: str, data: dict[str, Any], shape: dict[str, Any], *, required: bool) -> None:
    for key, hint in shape.items():
        if key not in data:
            if required:
                raise InvalidReport(f"{where}{key}: missing")
            continue
        if not conforms(data[key], hint):
            raise InvalidReport(f"{where}{key}: expected {_type_name(hint)}, got {show(data[key])}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type annotation (the dataclasses' own: the check follows them
    when a field is added). int is not bool; float accepts an int (a figure measured as a whole
    number is written as one); a construct this does not know is accepted as is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, list) and all(conforms(x, args[0] if args else Any) for x in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and conforms(x, args[1] if args else Any) for k, x in value.items())
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return isinstance(value, dict) and all(
            conforms(value[k], h) for k, h in _hints(hint).items() if k in value)
    return True


def _type_name(hint: Any) -> str:
    """``str | None``, ``list[str]``, ``int``: as the annotation reads."""
    return hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint).replace("typing.", "")


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
