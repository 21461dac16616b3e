"""The end of a run: the baseline (blessed or compared) and each output written on its own,
so a full or read-only disk costs that one file, with one error line, never the others."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .baseline import (
    BaselineError,
    build_baseline,
    fingerprint_changes,
    merge_baseline,
    read_baseline,
    write_baseline,
)
from .config import Settings
from .records import CaseRecord
from .render import render_markdown
from .atomic import write_text
from .report import RunRecord, report_dict, write_report
from .summary import Summary


@dataclass
class BaselineStep:
    """What to do with the baseline at the end of this run."""

    blessed: dict[str, Any] | None = None  # the document to write, when blessing
    note: str | None = None  # "baseline written: ...", "baseline: same setup", ...
    changes: list[str] = field(default_factory=list)  # what changed under the results


def baseline_step(summary: Summary, cases: list[CaseRecord], settings: Settings, *,
                  path: Path | None, compared: dict[str, Any] | None, update: bool,
                  interrupted: bool, scope: dict[str, Any]) -> BaselineStep:
    fresh = build_baseline(summary, cases, dict(settings.llama), dict(settings.generation), settings.reference)
    if update and path is not None and summary.rows:
        if interrupted:
            return BaselineStep(note="baseline not written: the run was interrupted")
        blessed = fresh
        if path.is_file():
            try:
                blessed = merge_baseline(read_baseline(path), fresh, **scope)
            except BaselineError:
                pass  # unreadable: this run's results replace it
        return BaselineStep(blessed=blessed, note=f"baseline written: {path}")
    if compared is not None:
        changes = fingerprint_changes(compared["fingerprint"], fresh["fingerprint"])
        return BaselineStep(note="baseline: " + ("; ".join(changes) if changes else "same setup"),
                            changes=changes)
    return BaselineStep()


def write_outputs(summary: Summary, settings: Settings, step: BaselineStep, *,
                  baseline_path: Path | None, report_path: Path | None,
                  markdown_path: Path | None = None, run: RunRecord | None = None,
                  html_path: Path | None = None) -> list[str]:
    """Write the baseline, the JSON report and the step summary; one line per failure."""
    errors: list[str] = []

    def attempt(what: str, path: Path, write: Callable[[Path], None]) -> bool:
        try:
            write(path)
        except OSError as exc:
            errors.append(f"{what}: cannot write {path}: {exc.strerror or exc}")
            return False
        return True

    if step.blessed is not None and baseline_path is not None:
        blessed = step.blessed
        if not attempt("baseline", baseline_path, lambda p: write_baseline(p, blessed)):
            summary.baseline_note = f"baseline NOT written: {baseline_path}"
    if report_path is not None:
        attempt("--quant-report", report_path, lambda p: write_report(p, summary, settings, run))
    if html_path is not None:
        _html(errors, attempt, html_path, report_dict(summary, settings, run))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    # the flipped cases' sections read every transcript: rendered only when someone reads them
    markdown = render_markdown(summary) if markdown_path is not None or step_summary else ""
    if markdown_path is not None:
        attempt("--quant-markdown", markdown_path, lambda p: write_text(p, markdown))
    if step_summary and summary.rows:

        def append(p: Path) -> None:
            with open(p, "a", encoding="utf-8") as fh:
                fh.write(markdown)

        attempt("GITHUB_STEP_SUMMARY", Path(step_summary), append)
    return errors


def _html(errors: list[str], attempt: Callable[[str, Path, Callable[[Path], None]], bool],
          path: Path, doc: dict[str, Any]) -> None:
    """The HTML page of the same document the JSON report holds (jinja2 imported only here)."""
    from .html_report import write_html
    from .report_view import ReportError

    try:
        attempt("--quant-html", path, lambda p: write_html(p, doc))
    except ReportError as exc:  # a bug of ours, never a lost run: one line, the other outputs kept
        errors.append(f"--quant-html: cannot render {path}: {exc}")
