"""`quantgate merge` on the real ladder: one report per variant (a CI matrix), merged, gives
what one run over both variants gives; reports of another setup or a variant twice are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from quantgate_project import Project, qa_module

RUNGS = ["Q4_K_M", "Q2_K"]
FACTS = qa_module([("What is the capital of France?", "paris"), ("What is the capital of Japan?", "tokyo"),
                   ("What is 2 + 2?", "4"), ("What color is the sky on a clear day?", "blue")], "test_fact")
# Q2_K (88.2 MB) fits, Q4_K_M (105.5 MB) does not: the two groups answer differently.
SIZE = """
import pytest

pytestmark = pytest.mark.quant_rubric(disk_mb=100)


def test_answers(quant_model):
    assert isinstance(quant_model.generate("Hello", max_tokens=2), str)
"""


def quantgate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_quantgate.cli", *map(str, args)],
                          capture_output=True, text=True)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """Everything but speed and memory, which differ from run to run."""
    return {
        "smallest_passing": report["smallest_passing"],
        "by_group": report["smallest_passing_by_group"],
        "groups": report["groups"],
        "rows": [(v["name"], v["passed"], v["reasons"],
                  {g: (gr["passed"], gr["accuracy"], gr["cases"], gr["misses"], gr["case_outcomes"])
                   for g, gr in v["groups"].items()}) for v in report["variants"]],
    }


def test_merged_per_variant_reports_equal_one_run(project: Project) -> None:
    project.config(RUNGS, generation={"max_tokens": 8})
    project.pytester.makepyfile(test_facts=FACTS, test_size=SIZE)
    single, whole = project.run_report()
    parts: dict[str, Path] = {}
    for name in RUNGS:
        parts[name] = project.path / f"quantgate-{name}.json"
        project.run(f"--quant-report={parts[name]}", f"--quant-variants={name}")
    out = project.path / "merged.json"
    merged = quantgate("merge", parts["Q4_K_M"], parts["Q2_K"], "--out", out)
    assert merged.stderr == ""
    assert merged.returncode == single.ret  # the same gate: 1, Q4_K_M is over disk_mb
    assert comparable(json.loads(out.read_text())) == comparable(whole)
    assert whole["smallest_passing_by_group"]["test_size.py"] == "Q2_K"
    # the same table as the single run printed, load and speed figures aside
    assert [_verdicts(line) for line in merged.stdout.splitlines()] == [_verdicts(line) for line in _table(single.outlines)]
    assert merged.stdout.splitlines()[-3:] == ["no variant passes the rubric", "  test_facts.py: smallest passing Q4_K_M",
                                               "  test_size.py: smallest passing Q2_K"]

    # another generation setting in one job: not the same experiment
    project.config(RUNGS, generation={"max_tokens": 12})
    other = project.path / "quantgate-other.json"
    project.run(f"--quant-report={other}", "--quant-variants=Q4_K_M")
    refused = quantgate("merge", parts["Q2_K"], other)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"quantgate merge: error: {parts['Q2_K']} and {other}: "
                              "different generation settings: max_tokens 8 vs 12\n")
    twice = quantgate("merge", project.path / "quantgate.json", parts["Q2_K"])
    assert twice.returncode == 2
    assert twice.stderr == (f"quantgate merge: error: {project.path / 'quantgate.json'} and {parts['Q2_K']}: "
                            "variant Q2_K is in both (merge one report per variant)\n")


def _table(lines: list[str]) -> list[str]:
    """The quantgate section of a pytest run's output."""
    start = next(i for i, line in enumerate(lines) if line.startswith("=") and " quantgate " in line) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("="))
    return lines[start:end]


def _verdicts(line: str) -> str:
    """A table row without its measured columns (mem MB, load s, gen tok/s)."""
    words = line.split()
    return " ".join(words[:2] + words[5:]) if words and words[0] in RUNGS else line
