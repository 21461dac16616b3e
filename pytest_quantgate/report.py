"""``--quant-report=PATH``: the summary as JSON for CI, written atomically."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from .atomic import write_text
from .config import Settings
from .summary import Summary

SCHEMA_VERSION = 1


def report_dict(summary: Summary, settings: Settings) -> dict[str, Any]:
    data = summary.to_dict()
    return {
        "schema": SCHEMA_VERSION,
        "model": settings.model,
        "config": str(settings.config_path),
        "reference": settings.reference,
        **data,
    }


def write_report(path: Path, summary: Summary, settings: Settings) -> None:
    """Raises OSError (nothing left behind) when the file cannot be written."""
    write_text(path, json.dumps(report_dict(summary, settings), indent=2, sort_keys=True) + "\n")


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
