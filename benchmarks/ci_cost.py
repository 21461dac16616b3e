"""What a pull-request run costs with the result cache and early decisions, on the example.

    python benchmarks/ci_cost.py LADDER_DIR [rungs]

LADDER_DIR holds smollm2-<type>.gguf files (`quantgate ladder ... --prefix smollm2`); rungs
default to all seven. The unmodified example project is copied to a temporary directory with
those rungs linked into models/, then, one after the other in this run:

1. cold: an empty result cache (every call live; entries written);
2. warm: the same command again (every call answered from the cache; each variant still loads
   and runs the speed probe, because the example gates speed and memory);
3. changed: one case's prompt edited (facts.yaml, the first case), then rerun;
4. full, no cache: `--quant-cache=off`, the plain cost of exploring the ladder;
5. early: `--quant-cache=off --quant-decide-early`, the same exploration with early decisions.

Each line gives wall time, live and cached calls (from the JSON report), and the ratio to its
comparison run; the last lines check the targets: warm <= 10% of cold, one live call per
variant after the change, early >= 30% faster than full with identical verdicts per variant
and per slice.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def run(project: Path, *args: str) -> tuple[float, dict[str, Any]]:
    report = project / "quantgate.json"
    report.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--quant-gate=any",
                           f"--quant-report={report}", *args], cwd=project, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not report.is_file():
        sys.exit(f"no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads(report.read_text())


def calls(report: dict[str, Any]) -> tuple[int, int]:
    return (sum(r["live_calls"] for r in report["variants"]),
            sum(r["cached_calls"] for r in report["variants"]))


def verdicts(report: dict[str, Any]) -> dict[str, tuple[bool, dict[str, bool]]]:
    return {r["name"]: (r["passed"], {g: gr["passed"] for g, gr in r["groups"].items()})
            for r in report["variants"]}


def main() -> None:
    ladder = Path(sys.argv[1])
    rungs = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else TYPES
    with tempfile.TemporaryDirectory(prefix="qg-ci-cost-") as tmp:
        project = Path(tmp) / "example"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("models", ".pytest_cache", "*.json"))
        (project / "models").mkdir()
        for t in rungs:
            src = ladder / f"smollm2-{t.lower()}.gguf"
            os.symlink(src, project / "models" / src.name)
        cache = f"--quant-cache={Path(tmp) / 'results'}"
        print(f"example project, {len(rungs)} rungs ({', '.join(rungs)}), {os.cpu_count()} cores")
        print(f"{'run':<34} {'wall s':>8} {'live calls':>11} {'cached':>7} {'vs':>18}")
        rows: dict[str, tuple[float, dict[str, Any]]] = {}

        def line(name: str, wall: float, report: dict[str, Any], base: str | None = None) -> None:
            live, hit = calls(report)
            vs = f"{wall / rows[base][0]:.1%} of {base}" if base else ""
            print(f"{name:<34} {wall:8.1f} {live:11d} {hit:7d} {vs:>18}", flush=True)

        for name, args, base in (("cold (empty cache)", (cache,), None), ("warm (unchanged)", (cache,), "cold")):
            rows[name.split()[0]] = run(project, *args)
            line(name, *rows[name.split()[0]], base)
        facts = project / "cases" / "facts.yaml"
        data = yaml.safe_load(facts.read_text())
        data["cases"][0]["prompt"] = data["cases"][0]["prompt"].replace("capital of", "capital city of")
        facts.write_text(yaml.safe_dump(data, sort_keys=False))
        rows["changed"] = run(project, cache)
        line("changed (one case's prompt)", *rows["changed"], "cold")
        rows["full"] = run(project, "--quant-cache=off")
        line("full, no cache", *rows["full"])
        rows["early"] = run(project, "--quant-cache=off", "--quant-decide-early")
        line("early decision, no cache", *rows["early"], "full")

        warm = rows["warm"][0] / rows["cold"][0]
        per_variant = {r["name"]: r["live_calls"] for r in rows["changed"][1]["variants"]}
        cut = 1 - rows["early"][0] / rows["full"][0]
        same = verdicts(rows["early"][1]) == verdicts(rows["full"][1])
        print(f"warm rerun: {warm:.1%} of the cold run's wall time (target <= 10%)")
        print(f"changed case: live calls per variant {sorted(set(per_variant.values()))} (target [1])")
        print(f"early decision: {cut:.1%} less wall time than the full exploration (target >= 30%), "
              f"verdicts {'identical' if same else 'DIFFERENT'}")
        print(f"smallest passing: full {rows['full'][1]['smallest_passing']}, "
              f"early {rows['early'][1]['smallest_passing']}, warm {rows['warm'][1]['smallest_passing']}")


if __name__ == "__main__":
    main()
