"""Variants: configured files, preflighted with the gguf reader, hashed once per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Mapping

from .config import VariantSpec
from .gguf_info import GGUFError, GGUFInfo, read_info, sha256_file
from .rubric import MB


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


_CACHE_VERSION = 2


def inspect_file(path: Path, cache: KeyValueCache | None = None) -> tuple[GGUFInfo, str]:
    """(GGUF info, SHA-256) of ``path``, cached by (path, size, mtime) so big files are read once.

    Raises GGUFError for a file llama.cpp could not load.
    """
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    key = f"quantgate/files/v{_CACHE_VERSION}/{path}"
    if cache is not None:
        hit = cache.get(key, None)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            return GGUFInfo.from_dict(hit["info"]), str(hit["sha256"])
    info = read_info(path)
    digest = sha256_file(path)
    if cache is not None:
        cache.set(key, {"stamp": stamp, "info": info.to_dict(), "sha256": digest})
    return info, digest


def name_from_metadata(path: Path, cache: KeyValueCache | None = None) -> str:
    """Name a globbed file by its GGUF file type (general.file_type), e.g. Q4_K_M."""
    try:
        return inspect_file(path, cache)[0].file_type
    except GGUFError:
        return path.stem  # preflight reports the real problem for this file later


def resolve(spec: VariantSpec, cache: KeyValueCache | None = None) -> Variant | BrokenVariant:
    try:
        info, digest = inspect_file(spec.path, cache)
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
    """What loading will cost, before loading: weights + f16 KV cache + the logits buffer.

    A floor, not a measurement (compute buffers and repacked weights come on top); the
    guard only refuses when even this floor is far past a limit.
    """
    info = variant.info
    n_ctx = int(llama_kwargs.get("n_ctx", 512)) or 512
    n_batch = min(int(llama_kwargs.get("n_batch", 512)), n_ctx)
    kv = 2 * info.n_layer * n_ctx * info.n_embd_kv * 2
    logits = info.n_vocab * n_batch * 4
    return variant.size_bytes + kv + logits


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
