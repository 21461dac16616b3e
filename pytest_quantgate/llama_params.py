"""The llama.cpp parameters a config may set: their types, and the ranges outside which
llama.cpp would abort the interpreter (``type_k: 99``), truncate silently (a seed past 2**32)
or fail natively. Checked before any model loads."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any
from collections.abc import Mapping

from .display import show


class ParamError(ValueError):
    """``FILE: section.key: problem``; config.py raises it as its ConfigError."""


# Keyword arguments of llama_cpp.Llama that a team plausibly sets, with their types. A typo
# would otherwise vanish into Llama(**kwargs), which swallows unknown keys without a word.
LLAMA_KEYS: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {
        "n_ctx": int,
        "n_batch": int,
        "n_ubatch": int,
        "n_threads": int,
        "n_threads_batch": int,
        "n_gpu_layers": int,
        "seed": int,
        "use_mmap": bool,
        "use_mlock": bool,
        "flash_attn": bool,
        "rope_freq_base": (int, float),
        "rope_freq_scale": (int, float),
        "type_k": (int, str),  # a ggml type code or its name; see KV_CACHE_TYPES
        "type_v": (int, str),
        "chat_format": str,
        "logits_all": bool,
        "embedding": bool,
        "offload_kqv": bool,
    }
)
DEFAULT_LLAMA: Mapping[str, Any] = MappingProxyType({"n_ctx": 2048, "seed": 0})

# The KV-cache types llama.cpp accepts (common/arg.cpp ``kv_cache_types``), by ggml type code
# (ggml.h ``enum ggml_type``, gguf's GGMLQuantizationType). Any other code aborts the process
# inside llama.cpp (SIGABRT, or SIGFPE for removed types such as 4) instead of raising.
KV_CACHE_TYPES: Mapping[str, int] = MappingProxyType({
    "f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "iq4_nl": 20, "q5_0": 6,
    "q5_1": 7,
})
_UNQUANTIZED_KV = (0, 1, 30)  # f32, f16, bf16: the V cache needs Flash Attention for the rest
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
GGML_MAX_N_THREADS = 512  # ggml's thread masks have this many slots
# key -> (lowest, highest, what a value below the lowest is told). llama.cpp takes these as 32-bit
# C integers: outside that range ctypes truncates them silently or llama.cpp fails natively.
LLAMA_INT_RANGES: Mapping[str, tuple[int, int, str]] = MappingProxyType({
    "n_ctx": (1, INT32_MAX, "must be positive"),
    "n_batch": (1, INT32_MAX, "must be positive"),
    "n_ubatch": (1, INT32_MAX, "must be positive"),
    "n_threads": (1, GGML_MAX_N_THREADS, "must be positive"),
    "n_threads_batch": (1, GGML_MAX_N_THREADS, "must be positive"),
    "n_gpu_layers": (-1, INT32_MAX, "must be -1 (all layers) or a layer count"),
    "seed": (-1, UINT32_MAX, "must be -1 (random) or a uint32"),
})

GENERATION_KEYS: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {"max_tokens": int, "temperature": (int, float), "top_k": int, "top_p": (int, float)}
)
DEFAULT_GENERATION: Mapping[str, Any] = MappingProxyType({"max_tokens": 64, "temperature": 0.0})


def check_llama(llama: dict[str, Any], where: str) -> None:
    """Ranges of the llama.cpp parameters that would otherwise crash or misbehave natively."""
    for key, (low, high, rule) in LLAMA_INT_RANGES.items():
        if key in llama and llama[key] < low:
            raise ParamError(f"{where}: llama.{key}: {rule}, got {show(llama[key])}")
        if key in llama and llama[key] > high:
            raise ParamError(f"{where}: llama.{key}: must be at most {high}, got {show(llama[key])}")
    for key in ("rope_freq_base", "rope_freq_scale"):
        if key in llama and not (finite(llama[key]) and llama[key] >= 0):
            raise ParamError(
                f"{where}: llama.{key}: must be 0 (the model's own) or a positive number, "
                f"got {show(llama[key])}"
            )
    for key in ("type_k", "type_v"):
        if key in llama:
            llama[key] = _kv_cache_type(llama[key], f"{where}: llama.{key}")
    if llama.get("type_v", 1) not in _UNQUANTIZED_KV and not llama.get("flash_attn", False):
        names = {code: name for name, code in KV_CACHE_TYPES.items()}
        raise ParamError(
            f"{where}: llama.type_v: {names[llama['type_v']]} needs flash_attn: true (llama.cpp "
            "quantizes the V cache only with Flash Attention); set it or use f16"
        )


def _kv_cache_type(value: Any, what: str) -> int:
    """``q8_0`` or ``8`` -> 8; anything llama.cpp would abort on is a ConfigError."""
    if isinstance(value, str) and value.strip().lower() in KV_CACHE_TYPES:
        return KV_CACHE_TYPES[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in KV_CACHE_TYPES.values():
        return value
    raise ParamError(
        f"{what}: {show(value)} is not a KV cache type llama.cpp supports; "
        f"use one of {', '.join(KV_CACHE_TYPES)}"
    )


def check_generation(generation: dict[str, Any], llama: Mapping[str, Any], where: str) -> None:
    max_tokens = generation["max_tokens"]
    if max_tokens <= 0:
        raise ParamError(f"{where}: generation.max_tokens: must be positive, got {show(max_tokens)}")
    n_ctx = llama.get("n_ctx", DEFAULT_LLAMA["n_ctx"])
    if max_tokens > n_ctx:
        raise ParamError(f"{where}: generation.max_tokens: {show(max_tokens)} exceeds llama.n_ctx {n_ctx}; "
                          "lower it or raise llama.n_ctx")
    if "top_k" in generation and not 0 <= generation["top_k"] <= INT32_MAX:
        raise ParamError(f"{where}: generation.top_k: must be 0 (off) or a positive count, "
                          f"got {show(generation['top_k'])}")
    top_p = generation.get("top_p", 1.0)
    if not 0 < top_p <= 1:  # also false for NaN
        raise ParamError(f"{where}: generation.top_p: must be above 0 and at most 1, got {show(top_p)}")
    temperature = generation["temperature"]
    if not (finite(temperature) and temperature >= 0):
        raise ParamError(
            f"{where}: generation.temperature: must be 0 (greedy) or a positive number, got {show(temperature)}"
        )


def _float(value: int | float) -> float:
    """``float(value)``, with ints beyond float's range as +-inf rather than an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def finite(value: int | float) -> bool:
    return math.isfinite(_float(value))
