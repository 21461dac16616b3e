"""``--quant-report=PATH``: the summary as JSON for CI, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report_dict(summary, settings), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # a reader never sees half a report
