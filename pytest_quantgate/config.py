"""quantgate.yaml + command line -> one frozen ``Settings``, resolved once per run.

Precedence is CLI > quantgate.yaml > ini > defaults. Every problem is raised as a
``ConfigError`` whose message names the file and key and says what was expected; the plugin
turns it into ``pytest.UsageError`` (exit code 4, no traceback).
"""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from collections.abc import Mapping

import yaml

from .constants import PROBE_REPEATS
from .display import show
from .llama_params import (
    DEFAULT_GENERATION,
    DEFAULT_LLAMA,
    GENERATION_KEYS,
    LLAMA_KEYS,
    ParamError,
    check_generation,
    check_llama,
)
from .rubric import Rubric, RubricError, parse_rubric

DEFAULT_CONFIG_NAME = "quantgate.yaml"
TOP_LEVEL_KEYS = (
    "model", "variants", "variants_glob", "reference", "llama", "rubric", "generation", "baseline",
    "isolation", "fidelity", "call_timeout", "speed_probe", "cache", "decide_early",
)
SPEED_PROBE_KEYS: Mapping[str, type | tuple[type, ...]] = MappingProxyType({"repeats": int})
FIDELITY_KEYS: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {"corpus": str, "n_ctx": int, "top_k": int}
)
ISOLATIONS = ("none", "process")
DEFAULT_BASELINE_NAME = "quantgate-baseline.json"
GATES = ("all", "any")

DEFAULT_CALL_TIMEOUT = 600.0
MAX_CALL_TIMEOUT = 1_000_000.0  # ~11.6 days; poll()/select() timeouts overflow past ~24.8 days


class ConfigError(Exception):
    """A problem in quantgate.yaml or a --quant-* flag; the message is shown as is."""


@dataclass(frozen=True)
class VariantSpec:
    """A variant as configured: a name and a file, not yet opened."""

    name: str
    path: Path
    sha256: str | None = None  # optional pin: the run refuses a file that does not match


@dataclass(frozen=True)
class Settings:
    config_path: Path
    model: str
    variants: tuple[VariantSpec, ...]  # run order: reference first, then as configured
    reference: str | None
    llama: Mapping[str, Any]
    generation: Mapping[str, Any]
    rubric_defaults: Rubric
    baseline_path: Path | None = None
    isolation: str = "none"  # "process": each variant in its own worker process
    fidelity_corpus: Path | None = None  # score fidelity on this text instead of the group's
    fidelity_n_ctx: int = 512
    fidelity_top_k: int = 1024
    call_timeout: float = DEFAULT_CALL_TIMEOUT  # seconds one call may take in a worker process
    probe_repeats: int = PROBE_REPEATS  # timed runs of the speed probe (after one warm-up)
    cache_dir: Path | None = None  # the result cache's directory (None: inside pytest's cache)
    cache_off: bool = False  # cache: off
    decide_early: bool = False  # stop a (group, variant) once its accuracy cannot pass

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)


def find_config(rootdir: Path, explicit: str | None, ini_value: str | None) -> Path | None:
    """The config file to use, or None when this project does not use quantgate."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise ConfigError(
                f"--quant-config: {explicit}: no such file"
                + (" (it is a directory)" if path.is_dir() else "")
            )
        return path.resolve()
    if ini_value:
        path = (rootdir / ini_value).resolve()
        if not path.is_file():
            raise ConfigError(f"ini quantgate_config: {ini_value}: no such file under {rootdir}")
        return path
    path = rootdir / DEFAULT_CONFIG_NAME
    return path.resolve() if path.is_file() else None


def load_settings(path: Path, *, name_of: Any = None) -> Settings:
    """Read and validate ``path``. ``name_of(Path) -> str`` names globbed files (GGUF metadata)."""
    where = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}{loc}: invalid YAML: {problem}") from exc
    except RecursionError:
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. a date such as 2024-13-45, an integer of 5000 digits
        problem = str(exc).split(";")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: invalid YAML: {problem[:100]}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level, got {_kind(raw)}")
    unknown = sorted((k for k in raw if not (isinstance(k, str) and k in TOP_LEVEL_KEYS)), key=_key)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {show(unknown[0])}; known keys: {', '.join(TOP_LEVEL_KEYS)}"
        )
    base = path.parent

    specs = _variant_specs(raw, where, base, name_of)
    names = [s.name for s in specs]
    reference = raw.get("reference")
    if reference is not None:
        if not isinstance(reference, str) or reference not in names:
            raise ConfigError(
                f"{where}: reference: {show(reference)} is not a variant; variants: {', '.join(names)}"
            )
        specs = [s for s in specs if s.name == reference] + [s for s in specs if s.name != reference]

    llama = dict(DEFAULT_LLAMA)
    llama.update(_typed_section(raw, "llama", LLAMA_KEYS, where))
    _checked(check_llama, llama, where)
    generation = dict(DEFAULT_GENERATION)
    generation.update(_typed_section(raw, "generation", GENERATION_KEYS, where))
    _checked(check_generation, generation, llama, where)

    rubric_raw = raw.get("rubric") or {}
    if not isinstance(rubric_raw, dict):
        raise ConfigError(f"{where}: rubric: expected a mapping of thresholds, got {_kind(rubric_raw)}")
    try:
        rubric = parse_rubric(rubric_raw)
    except RubricError as exc:
        raise ConfigError(f"{where}: rubric.{exc}") from exc

    baseline = raw.get("baseline", DEFAULT_BASELINE_NAME)
    if not isinstance(baseline, str) or not baseline:
        raise ConfigError(f"{where}: baseline: expected a file path, got {_kind(baseline)}")
    fid = _typed_section(raw, "fidelity", FIDELITY_KEYS, where)
    corpus = None
    if "corpus" in fid:
        corpus = (base / fid["corpus"]).resolve()
        if not corpus.is_file():
            raise ConfigError(f"{where}: fidelity.corpus: {fid['corpus']}: no such file")
    for key in ("n_ctx", "top_k"):
        if key in fid and fid[key] < 2:
            raise ConfigError(f"{where}: fidelity.{key}: must be at least 2, got {show(fid[key])}")
    if corpus is not None and fid.get("n_ctx", 512) > llama.get("n_ctx", 512):
        raise ConfigError(f"{where}: fidelity.n_ctx: {show(fid.get('n_ctx', 512))} exceeds llama.n_ctx "
                          f"{llama.get('n_ctx', 512)}; lower it or raise llama.n_ctx")
    isolation = raw.get("isolation", "none")
    if isolation not in ISOLATIONS:
        raise ConfigError(f"{where}: isolation: expected one of {', '.join(ISOLATIONS)}, got {_kind(isolation)}")
    call_timeout = raw.get("call_timeout", DEFAULT_CALL_TIMEOUT)
    if (isinstance(call_timeout, bool) or not isinstance(call_timeout, (int, float))
            or not 0 < call_timeout <= MAX_CALL_TIMEOUT):  # also refuses NaN
        raise ConfigError(f"{where}: call_timeout: expected seconds, a number above 0 and at most "
                          f"{MAX_CALL_TIMEOUT:.0f}, got {_kind(call_timeout)}")
    probe = _typed_section(raw, "speed_probe", SPEED_PROBE_KEYS, where)
    repeats = probe.get("repeats", PROBE_REPEATS)
    if not 3 <= repeats <= 100:
        raise ConfigError(f"{where}: speed_probe.repeats: expected 3 to 100 timed runs, got {show(repeats)}")
    cache = raw.get("cache")
    if cache is not None and (not isinstance(cache, str) or not cache or cache == "refresh"):
        raise ConfigError(f"{where}: cache: expected a directory or off, got {_kind(cache)} "
                          "(refresh is a one-run choice: pytest --quant-cache=refresh)")
    decide_early = raw.get("decide_early", False)
    if not isinstance(decide_early, bool):
        raise ConfigError(f"{where}: decide_early: expected true or false, got {_kind(decide_early)}")
    model = raw.get("model", path.parent.name)
    if not (isinstance(model, str) or type(model) in (int, float) and abs(model) < 1e15):
        # str() of a nested value could be huge (YAML aliases): a label must be a scalar
        raise ConfigError(f"{where}: model: expected a name for reports, got {_kind(model)}")
    return Settings(
        config_path=path,
        model=str(model),
        variants=tuple(specs),
        reference=reference,
        llama=MappingProxyType(llama),
        generation=MappingProxyType(generation),
        rubric_defaults=rubric,
        baseline_path=(base / baseline).resolve(),
        isolation=isolation,
        fidelity_corpus=corpus,
        fidelity_n_ctx=int(fid.get("n_ctx", 512)),
        fidelity_top_k=int(fid.get("top_k", 1024)),
        call_timeout=float(call_timeout),
        probe_repeats=int(repeats),
        cache_dir=(base / cache).resolve() if cache not in (None, "off") else None,
        cache_off=cache == "off",
        decide_early=decide_early,
    )


def _variant_specs(raw: dict[str, Any], where: str, base: Path, name_of: Any) -> list[VariantSpec]:
    variants = raw.get("variants")
    pattern = raw.get("variants_glob")
    if variants is not None and pattern is not None:
        raise ConfigError(f"{where}: give either variants or variants_glob, not both")
    specs: list[VariantSpec] = []
    if variants is not None:
        if not isinstance(variants, dict):
            raise ConfigError(f"{where}: variants: expected a mapping of name -> GGUF path, got {_kind(variants)}")
        for name, value in variants.items():
            key = f"variants.{_key(name)}"
            if not (isinstance(name, str) or type(name) in (int, float) and abs(name) < 1e15):
                raise ConfigError(f"{where}: {key}: expected a variant name such as Q4_K_M")
            pin: str | None = None
            if isinstance(value, dict):
                extra = sorted(set(value) - {"path", "sha256"})
                if extra:
                    raise ConfigError(f"{where}: {key}: unknown key {show(extra[0])}; use path and sha256")
                pin = value.get("sha256")
                if pin is not None and (not isinstance(pin, str) or len(pin) != 64):
                    raise ConfigError(f"{where}: {key}.sha256: expected 64 hex digits, got {show(pin)}")
                value = value.get("path")
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {key}: expected a path to a .gguf file, got {_kind(value)}")
            p = (base / value).resolve()
            if p.is_dir():
                raise ConfigError(f"{where}: {key}: {value} is a directory, not a .gguf file")
            if not p.is_file():
                raise ConfigError(f"{where}: {key}: {value}: no such file (paths are relative to {where})")
            specs.append(VariantSpec(str(name), p, pin.lower() if pin else None))
    elif pattern is not None:
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: variants_glob: expected a glob pattern string, got {_kind(pattern)}")
        files = sorted(Path(p).resolve() for p in globmod.glob(str(base / pattern)) if Path(p).is_file())
        if not files:
            raise ConfigError(f"{where}: variants_glob: {show(pattern)} matches no file under {base}")
        # Largest file first: the natural top of a ladder; ties broken by path for determinism.
        files.sort(key=lambda p: (-p.stat().st_size, str(p)))
        seen: dict[str, Path] = {}
        for p in files:
            name = name_of(p) if name_of else p.stem
            if name in seen:
                raise ConfigError(
                    f"{where}: variants_glob: {seen[name].name} and {p.name} are both {name}; "
                    "list them under variants: with distinct names"
                )
            seen[name] = p
            specs.append(VariantSpec(name, p))
    if not specs:
        raise ConfigError(f"{where}: no variants; add variants: (name: path.gguf) or variants_glob:")
    return specs


def _typed_section(
    raw: dict[str, Any], section: str, keys: Mapping[str, type | tuple[type, ...]], where: str
) -> dict[str, Any]:
    value = raw.get(section) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {section}: expected a mapping, got {_kind(value)}")
    out: dict[str, Any] = {}
    for key, val in value.items():
        if key not in keys:
            raise ConfigError(f"{where}: {section}.{_key(key)}: unknown key; known: {', '.join(keys)}")
        want = keys[key]
        ok = isinstance(val, want) and not (isinstance(val, bool) and want in (int, (int, float)))
        if not ok:
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise ConfigError(f"{where}: {section}.{_key(key)}: expected {names}, got {show(val)}")
        out[key] = val
    return out


def select_variants(names: tuple[str, ...], spec: str | None) -> tuple[str, ...]:
    """``--quant-variants`` -> names in run order. ``Q4`` selects Q4_0, Q4_K_M, ...

    A name selects the variant of exactly that name (case-insensitive), else every variant whose
    name starts with it followed by ``_``.
    """
    if spec is None:
        return names
    wanted: set[str] = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        exact = [n for n in names if n.lower() == token.lower()]
        hits = exact or [n for n in names if n.lower().startswith(token.lower() + "_")]
        if not hits:
            raise ConfigError(
                f"--quant-variants: {token!r} selects no variant; configured: {', '.join(names)}"
            )
        wanted.update(hits)
    if not wanted:
        raise ConfigError(f"--quant-variants: empty list; configured: {', '.join(names)}")
    return tuple(n for n in names if n in wanted)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _checked(check: Any, *args: Any) -> None:
    try:
        check(*args)
    except ParamError as exc:
        raise ConfigError(str(exc)) from None


def _key(key: Any) -> str:
    """A mapping key as part of a dotted name (``llama.n_ctx``); odd or long keys shown bounded."""
    return key if isinstance(key, str) and len(key) <= 60 else show(key)


def _kind(value: Any) -> str:
    return show(value) if isinstance(value, (str, int, float)) else type(value).__name__
