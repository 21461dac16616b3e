"""What a case's reports mean: a miss (a failed check that counts against accuracy) or a
failure, and the one outcome each case ends with. Pure functions over pytest's reports."""

from __future__ import annotations

from typing import Any

import pytest

from .constants import MARKER, MISS_PREFIX
from .records import CaseRecord


def mark_miss(call: pytest.CallInfo[None], rep: pytest.TestReport) -> None:
    """Turn a failed assertion into a miss (reported as XFAIL ``quant miss: ...``), unless it
    was raised inside llama_cpp or this plugin: that is a fault, not a wrong answer."""
    if call.when != "call" or not rep.failed or call.excinfo is None:
        return
    if not call.excinfo.errisinstance(AssertionError):
        return
    origin = raised_in_library(call.excinfo)
    if origin is not None:
        rep.sections.append(("quantgate", f"AssertionError raised inside {origin}: "
                                          "counted as a failure, not a miss"))
        return
    rep.outcome = "skipped"
    first = (str(call.excinfo.value) or "assertion failed").splitlines()[0]
    rep.wasxfail = MISS_PREFIX + one_line(first)


def raised_in_library(excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """The module an AssertionError came from if that is llama_cpp or this plugin (say
    llama-cpp-python's ``assert self.n_tokens > 0``). Anything else (the test, the project's
    helpers, unittest's or numpy's assert helpers) is a check the model failed: a miss."""
    tb = excinfo.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    if not isinstance(module, str):
        return None
    top = module.split(".", 1)[0]
    if top == "llama_cpp" or (top == __name__.split(".", 1)[0] and module != f"{top}.checks"):
        return module
    return None


def case_record(report: pytest.TestReport, case: dict[str, Any],
                previous: CaseRecord | None) -> CaseRecord | None:
    """The case's record after ``report``, or None when the report changes nothing (a clean
    setup, or a clean teardown after the call decided)."""
    outcome = _outcome(report)
    if outcome is None:
        return None
    if report.when == "teardown" and previous is not None and outcome != "error":
        return None
    message = ""
    if outcome == "skipped" and isinstance(report.longrepr, tuple):
        message = one_line(str(report.longrepr[2]).removeprefix("Skipped: "))  # (path, line, "Skipped: why")
    elif outcome == "miss":
        message = str(getattr(report, "wasxfail", "")).removeprefix(MISS_PREFIX)
    elif outcome in ("failed", "error"):
        message = one_line(report.longreprtext.strip().splitlines()[-1] if report.longreprtext else "")
    return CaseRecord(report.nodeid, case["variant"], case["group"], outcome, message,
                      repeat=case.get("repeat"), pass_rate=float(case.get("pass_rate", 1.0)),
                      n_repeats=int(case.get("n_repeats", 1)))


def _outcome(report: pytest.TestReport) -> str | None:
    if report.when == "setup":
        if report.failed:
            return "error"
        return "skipped" if report.skipped else None
    if report.when == "call":
        if report.skipped:
            # A failed case under the user's own @pytest.mark.xfail is a wrong answer too: left
            # out, xfail could only ever raise the accuracy (its XPASS counts as a pass).
            return "miss" if getattr(report, "wasxfail", None) is not None else "skipped"
        return "passed" if report.passed else "failed"
    return "error" if report.failed else "passed"


def is_verdict(report: pytest.TestReport) -> bool:
    return f"::{MARKER}[" in report.nodeid


def one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
