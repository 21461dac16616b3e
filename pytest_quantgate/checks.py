"""Checks for model output. Each returns a ``Check``: truthy when it holds, and its repr is a
readable reason, so ``assert number_in(out, 42)`` fails with what was expected and what came.
"""

from __future__ import annotations

import json
import re
from typing import Any
from collections.abc import Iterable, Mapping

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)
_TYPES: Mapping[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "list": (list,), "dict": (dict,),
}


class Check:
    __slots__ = ("ok", "reason")

    def __init__(self, ok: bool, reason: str) -> None:
        self.ok = ok
        self.reason = reason

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.reason


def _show(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def contains_any(text: str, options: Iterable[str]) -> Check:
    """Case-insensitive: any of ``options`` occurs in ``text``."""
    opts = [o.lower() for o in options]
    low = text.lower()
    hit = next((o for o in opts if o in low), None)
    if hit is not None:
        return Check(True, f"{hit!r} found in {_show(text)}")
    return Check(False, f"none of {opts} in {_show(text)}")


def numbers(text: str) -> list[float]:
    """Every number written in ``text`` (thousands separators removed)."""
    return [float(n) for n in _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text))]


def number_in(text: str, expected: float, *, tol: float = 1e-9) -> Check:
    """``expected`` is among the numbers in ``text``: the wording is free, the value is not."""
    found = numbers(text)
    if any(abs(n - expected) <= tol for n in found):
        return Check(True, f"{expected:g} found in {_show(text)}")
    shown = ", ".join(f"{n:g}" for n in found[:8]) or "no number"
    return Check(False, f"expected {expected:g}, got {shown} in {_show(text)}")


def matches(text: str, pattern: str) -> Check:
    """The stripped ``text`` fully matches the regex ``pattern``."""
    if re.fullmatch(pattern, text.strip()):
        return Check(True, f"{_show(text)} matches /{pattern}/")
    return Check(False, f"{_show(text)} does not match /{pattern}/")


def parse_json_object(text: str) -> Any:
    """The JSON in ``text``, allowing the ```json fences chat models like to add."""
    s = text.strip()
    m = _FENCE.match(s)
    return json.loads(m.group(1) if m else s)


def json_matching(text: str, schema: Mapping[str, str],
                  equals: Mapping[str, Any] | None = None) -> Check:
    """``text`` is a JSON object with each ``schema`` key of the named type (str, int, float,
    bool, list, dict); ``equals`` pins exact values (strings compared case-insensitively)."""
    try:
        obj = parse_json_object(text)
    except ValueError as exc:
        return Check(False, f"not JSON ({exc.args[0].split(':')[0]}): {_show(text)}")
    if not isinstance(obj, dict):
        return Check(False, f"expected a JSON object, got {type(obj).__name__}: {_show(text)}")
    for key, tname in schema.items():
        if key not in obj:
            return Check(False, f"JSON lacks key {key!r}: {_show(text)}")
        want = _TYPES[tname]
        val = obj[key]
        if not isinstance(val, want) or (isinstance(val, bool) and bool not in want):
            return Check(False, f"JSON key {key!r} should be {tname}, got {val!r}")
    for key, exp in (equals or {}).items():
        got = obj.get(key)
        same = (got.strip().lower() == exp.strip().lower()) if isinstance(got, str) and isinstance(exp, str) else got == exp
        if not same:
            return Check(False, f"JSON key {key!r} should be {exp!r}, got {got!r}")
    return Check(True, f"JSON matches {dict(schema)}")
