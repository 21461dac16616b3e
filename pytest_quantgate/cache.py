"""The exact result cache: a call's answer, keyed by everything that determines it.

A call is deterministic when decoding is greedy (or sampled with a fixed seed) and starts from
an empty KV cache (``LlamaCppModel`` resets per call), so the same model file, llama.cpp build,
``llama`` settings, generation parameters and request give the same answer. The key is the
SHA-256 of all of those as canonical JSON; a hit returns what the live call would have returned.

Entries are JSON files (never pickle: nothing read is executed) that store their own key and
request; a file whose key or request does not match what was asked, or that does not parse as
a valid result, is a miss with a warning, and the live answer overwrites it. Writes are atomic
(temp file + rename), so ``pytest -n`` workers can share one directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable, Mapping

import pytest

from .atomic import write_text
from .backend import Completion

T = TypeVar("T")

FORMAT = 2  # bump when the key's meaning or the entry layout changes: old entries then miss
MODES = ("on", "refresh")  # refresh: recompute every call and overwrite its entry

# llama-cpp-python's own defaults when a call does not pass a temperature
_DEFAULT_TEMPERATURE = {"complete": 0.8, "chat": 0.2}


def plain(value: Any) -> bool:
    """JSON data only: a grammar object or a logits processor cannot be part of a key."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return False


def greedy(op: str, params: Mapping[str, Any]) -> bool:
    """Temperature 0 (or below): the same answer whatever the seed."""
    temperature = params.get("temperature", _DEFAULT_TEMPERATURE.get(op, 0.0))
    return isinstance(temperature, (int, float)) and temperature <= 0


def deterministic(op: str, params: Mapping[str, Any]) -> bool:
    """Greedy calls always; sampled ones only with a fixed seed (-1 or none is random)."""
    if greedy(op, params):
        return True
    seed = params.get("seed")
    return isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0


@functools.cache
def llama_build() -> dict[str, str | None]:
    """llama-cpp-python's version and llama.cpp's system info (CPU features, backends):
    kernels differ between builds and machines, and so may the last bits of an answer. Fixed
    for the process: asked once, not once per variant."""
    try:
        import llama_cpp
    except ImportError:
        return {"llama_cpp_python": None, "system_info": None}
    return {"llama_cpp_python": str(llama_cpp.__version__),
            "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}


def digest(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(doc).encode()).hexdigest()


def canonical(doc: Any) -> str:
    """One JSON spelling per document (sorted keys): what keys and compares requests."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ResultCache:
    """One directory of entries, ``<root>/<key[:2]>/<key>.json``."""

    def __init__(self, root: Path, mode: str = "on") -> None:
        self.root = root
        self.mode = mode
        self._warned: set[str] = set()

    def get(self, request: Mapping[str, Any], parse: Callable[[Any], T | None]) -> T | None:
        """The stored result for ``request`` as ``parse`` reads it, or None (a miss)."""
        if self.mode == "refresh":
            return None
        key = digest(request)
        path = self._path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self._warn(path, f"unreadable ({exc})")
            return None
        try:
            entry = json.loads(text)
        except ValueError:
            self._warn(path, "not valid JSON")
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or "result" not in entry:
            self._warn(path, "not a quantgate cache entry of this version")
            return None
        if entry.get("key") != key or canonical(entry.get("request") or {}) != canonical(request):
            self._warn(path, "its stored key does not match the request it is filed under")
            return None
        result = parse(entry["result"])
        if result is None:
            self._warn(path, "its result is not a valid answer")
        return result

    def put(self, request: Mapping[str, Any], result: Any) -> None:
        key = digest(request)
        entry = {"format": FORMAT, "key": key, "request": request, "result": result}
        try:
            write_text(self._path(key), canonical(entry) + "\n")
        except OSError as exc:  # a full disk must not fail the test that made the call
            self._warn(self.root, f"cannot write entries ({exc.strerror or exc})")

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _warn(self, path: Path, why: str) -> None:
        if str(path) in self._warned:
            return
        self._warned.add(str(path))
        warnings.warn(pytest.PytestWarning(
            f"quantgate cache: ignoring {path}: {why}; the call runs live and rewrites it"),
            stacklevel=2)


def completion_to_dict(c: Completion) -> dict[str, Any]:
    d = asdict(c)
    d["tokens"] = list(c.tokens)
    d.pop("cached", None)
    return d


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,), "prompt_tokens": (int,), "completion_tokens": (int,),
    "wall_seconds": (int, float), "prompt_eval_tokens": (int,), "prompt_eval_ms": (int, float),
    "eval_tokens": (int,), "eval_ms": (int, float), "finish_reason": (str, type(None)),
    "tokens": (list,), "prompt_text": (str,),
}


def completion_from_dict(data: Any) -> Completion | None:
    """A stored completion, checked field by field; None when anything is off."""
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(Completion)} - {"cached"}
    if set(data) != names:
        return None
    for name, types in _FIELD_TYPES.items():
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return None
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in data["tokens"]):
        return None
    return Completion(**{**data, "tokens": tuple(data["tokens"]), "cached": True})
