"""Variants: configured files, preflighted with the gguf reader, hashed once per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Mapping

from .config import VariantSpec
from .gguf_info import GGUFError, GGUFInfo, read_info, sha256_file
from .constants import MB


class KeyValueCache(Protocol):
    """The part of pytest's ``config.cache`` we use."""

    def get(self, key: str, default: Any) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class Variant:
    """One quant variant of the model: what the ``quant_variant`` fixture gives a test."""

    name: str
    path: Path
    size_bytes: int
    file_type: str
    sha256: str
    info: GGUFInfo

    @property
    def size_mb(self) -> float:
        return self.size_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "file_type": self.file_type,
            "sha256": self.sha256,
            "architecture": self.info.architecture,
            "n_params": self.info.n_params,
            "bits_per_weight": self.info.bits_per_weight,
        }


@dataclass(frozen=True)
class BrokenVariant:
    """A configured variant that failed preflight: its tests error with ``reason``."""

    name: str
    path: Path
    reason: str


_CACHE_VERSION = 3


def inspect_file(path: Path, cache: KeyValueCache | None = None, *,
                 verify: bool = False) -> tuple[GGUFInfo, str]:
    """(GGUF info, SHA-256) of ``path``, cached so big files are read once.

    The cache is keyed by path, size, mtime *and* ctime, inode and device: ``touch -r``,
    ``cp -p``, ``rsync -a`` and tar restore an mtime, but nothing in user space can set a
    ctime, so a file changed in place is always re-read. ``verify`` (a pinned file) hashes the
    file for real whatever the cache says: anyone who can write ``.pytest_cache`` could forge
    an entry. Raises GGUFError for a file llama.cpp could not load.
    """
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    key = f"quantgate/files/v{_CACHE_VERSION}/{path}"
    if cache is not None:
        hit = _cached(cache.get(key, None), stamp)
        if hit is not None:
            info, digest = hit
            if not verify or sha256_file(path) == digest:
                return info, digest
    info = read_info(path)
    digest = sha256_file(path)
    if cache is not None:
        cache.set(key, {"stamp": stamp, "info": info.to_dict(), "sha256": digest})
    return info, digest


def _cached(entry: Any, stamp: list[int]) -> tuple[GGUFInfo, str] | None:
    """A cache entry that proves its key and shape, or None (a miss, never a crash)."""
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return None
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    try:
        return GGUFInfo.from_dict(entry.get("info")), digest
    except (ValueError, TypeError):
        return None


def name_from_metadata(path: Path, cache: KeyValueCache | None = None) -> str:
    """Name a globbed file by its GGUF file type (general.file_type), e.g. Q4_K_M."""
    try:
        return inspect_file(path, cache)[0].file_type
    except GGUFError:
        return path.stem  # preflight reports the real problem for this file later


def resolve(spec: VariantSpec, cache: KeyValueCache | None = None) -> Variant | BrokenVariant:
    try:
        info, digest = inspect_file(spec.path, cache, verify=spec.sha256 is not None)
    except GGUFError as exc:
        return BrokenVariant(spec.name, spec.path, f"{spec.path.name}: {exc}")
    except OSError as exc:
        return BrokenVariant(spec.name, spec.path, f"{spec.path}: {exc.strerror}")
    if spec.sha256 and spec.sha256 != digest:
        return BrokenVariant(
            spec.name,
            spec.path,
            f"{spec.path.name}: SHA-256 {digest} does not match the pinned {spec.sha256}; "
            "the file changed: re-pin it in quantgate.yaml if the change is intended",
        )
    return Variant(spec.name, spec.path, info.size_bytes, info.file_type, digest, info)


def estimate_memory_bytes(variant: Variant, llama_kwargs: Mapping[str, Any]) -> int:
    """A true lower bound of what the loaded variant will add, before loading it: the weights a
    forward pass must read, plus the KV cache (which llama.cpp clears, so it is resident).

    Left out because they may not be allocated or touched: the logits buffer (one row unless
    ``logits_all``), compute buffers, repacked weights, the embedding rows no prompt reads.
    The measured figure is always at least this.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    info = variant.info
    weights = (info.tensor_bytes or variant.size_bytes) - info.untouched_bytes
    n_ctx = int(llama_kwargs.get("n_ctx", 512)) or 512
    if info.sliding_window:
        n_ctx = min(n_ctx, info.sliding_window)  # some layers keep only the window

    def per_element(key: str) -> float:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(int(llama_kwargs.get(key, 1)))]
        return size / block

    kv = info.n_layer * n_ctx * (info.n_embd_kv * per_element("type_k")
                                 + info.n_embd_v * per_element("type_v"))
    return int(max(0, weights) + kv)


GUARD_FACTOR = 3  # refuse to load past this multiple of the loosest memory_mb ceiling


def memory_refusal(variant: Variant, llama_kwargs: Mapping[str, Any], ceilings: list[float | None],
                   available: int) -> str | None:
    """Why loading ``variant`` must not be tried, if so: it cannot fit (better refused than
    OOM-killed with the session), or no group could pass (every group has a ``memory_mb``
    ceiling, ``ceilings``, and the floor is far over even the loosest; a tight ceiling on one
    slice must not block the variant for the slices that have none)."""
    need = estimate_memory_bytes(variant, llama_kwargs)
    if need > available * 0.9:
        return (f"needs at least {need / MB:,.0f} MB (weights, KV cache) but only "
                f"{available / MB:,.0f} MB is available; not loaded")
    limits = [c for c in ceilings if c]
    if ceilings and len(limits) == len(ceilings) and need / MB > GUARD_FACTOR * max(limits):
        return (f"needs at least {need / MB:,.0f} MB, over {GUARD_FACTOR}x the loosest memory_mb "
                f"{max(limits):g} of its groups; not loaded (raise memory_mb or drop the variant)")
    return None


def check_same_model(variants: list[Variant]) -> str | None:
    """Variants whose vocabularies differ are not one model: a config mistake worth stopping."""
    if not variants:
        return None
    first = variants[0]
    for v in variants[1:]:
        if v.info.tokenizer_sha256 != first.info.tokenizer_sha256:
            return (
                f"variants {first.name} ({first.path.name}) and {v.name} ({v.path.name}) have "
                "different tokenizers: they are not quants of one model"
            )
        if v.info.architecture != first.info.architecture:
            return (
                f"variants {first.name} ({first.info.architecture}) and {v.name} "
                f"({v.info.architecture}) have different architectures"
            )
    return None
