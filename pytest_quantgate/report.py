"""``--quant-report=PATH``: the summary as JSON for CI, written atomically, with what
``quantgate merge`` needs to rebuild that summary from several reports."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import __version__
from .atomic import write_text
from .summary import Summary

if TYPE_CHECKING:  # only for annotations: ``quantgate merge`` needs no configuration
    from .config import Settings
    from .variants import BrokenVariant, Variant

SCHEMA_VERSION = 1  # additions that older readers can ignore keep the number

# Written when the run passes a RunRecord; a report without them still merges on its rows.
SHA256_KEY = "variant_sha256"  # top level: every preflighted variant -> its file's SHA-256
OTHER_FAILURES_KEY = "other_failures"  # top level: failures outside variants (collection, plain tests)
STATS_KEY = "stats"  # per row: the variant's stats snapshot as measured, every field


@dataclass(frozen=True)
class RunRecord:
    """What the summary does not keep but a merge of reports needs to rebuild it exactly.

    Rows keep every case and the figures derived from the stats; a rebuilt summary also needs
    the raw stats (a field added later survives a merge without the merge knowing it), the
    failures outside variants (they fail a run's gate), and the hash of every preflighted file:
    the reference's shapes reference and fidelity verdicts even where it is not selected.
    """

    sha256: Mapping[str, str] = field(default_factory=dict)
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    other_failures: int = 0


def run_record(variants: Mapping[str, Variant | BrokenVariant],
               stats: Mapping[str, Mapping[str, Any]], other_failures: int = 0) -> RunRecord:
    """The session's view of a run as a RunRecord: ``variants`` are all configured ones (those
    that were not preflighted have no hash and are left out)."""
    from .variants import Variant  # here: the merge command imports this module without it

    hashes = {name: v.sha256 for name, v in variants.items() if isinstance(v, Variant)}
    return RunRecord(hashes, dict(stats), other_failures)


def document(summary: Summary, *, model: str, config: str, reference: str | None,
             run: RunRecord | None = None) -> dict[str, Any]:
    """The report as data: the summary plus what describes the run; the same for a pytest run
    and for a merge of reports."""
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "quantgate": __version__,
        "model": model,
        "config": config,
        "reference": reference,
        **summary.to_dict(),
    }
    if run is not None:
        doc[SHA256_KEY] = dict(run.sha256)
        doc[OTHER_FAILURES_KEY] = run.other_failures
        for row in doc["variants"]:
            row[STATS_KEY] = dict(run.stats.get(row["name"]) or {})
    return doc


def report_dict(summary: Summary, settings: Settings, run: RunRecord | None = None) -> dict[str, Any]:
    return document(summary, model=settings.model, config=str(settings.config_path),
                    reference=settings.reference, run=run)


def write_report(path: Path, summary: Summary, settings: Settings, run: RunRecord | None = None) -> None:
    """Raises OSError (nothing left behind) when the file cannot be written."""
    write_document(path, report_dict(summary, settings, run))


def write_document(path: Path, doc: dict[str, Any]) -> None:
    """Sorted keys: two reports of the same run differ only where their figures do."""
    write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def environment(settings: Settings) -> dict[str, Any]:
    """Where the figures came from: they only mean something next to this."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "pytest": pytest.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": settings.llama.get("n_threads"),
        "llama": dict(settings.llama),
        "generation": dict(settings.generation),
    }
    try:
        import llama_cpp

        env["llama_cpp_python"] = llama_cpp.__version__
        env["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as exc:  # pragma: no cover - reported rather than lost
        env["llama_cpp_python"] = f"unavailable: {exc}"
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
