"""Is the speed probe's decode speed llama.cpp's own, and is it steadier than one pass?

    python benchmarks/speed_probe.py LADDER_DIR LLAMA_BENCH [threads] [repeats]

LADDER_DIR holds smollm2-<type>.gguf files (as `quantgate ladder --prefix smollm2` writes them);
LLAMA_BENCH is the llama-bench binary built from the llama.cpp source that the llama-cpp-python
sdist vendors (see the README's Development section). For each file, side by side in one run:

- llama-bench's tg (decode tokens/s, 32 tokens after a 64-token context, `-r` repetitions);
- the probe's decode tok/s median (the plugin's own workload: a ~64-token prompt, then 32
  greedy tokens, one warm-up and R timed runs), and its ratio to llama-bench;
- run to run: three fresh loads, each giving the probe's median and today's single-pass figure
  (the first call after a load, end to end, which is what a speed gate read before the probe);
  the spread of each over the three loads, (max - min) / median.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from llama_cpp import Llama

from pytest_quantgate.backend import LlamaCppModel
from pytest_quantgate.constants import PROBE_MAX_TOKENS, PROBE_PROMPT
from pytest_quantgate.measure import Probe

TYPES = ("F16", "Q8_0", "Q4_K_M", "Q2_K")


def probe_once(path: Path, threads: int, repeats: int) -> tuple[Probe, float]:
    """(the probe over ``repeats`` timed runs, the single-pass e2e tok/s of the first call)."""
    model = LlamaCppModel(Llama(model_path=str(path), n_ctx=512, n_threads=threads, seed=0, verbose=False))
    try:
        calls = [model.complete(PROBE_PROMPT, max_tokens=PROBE_MAX_TOKENS, stop=None,
                                params={"temperature": 0.0, "seed": 0}) for _ in range(repeats + 1)]
    finally:
        model.close()
    first = calls[0]
    return Probe.of(calls[1:]), first.completion_tokens / first.wall_seconds


def llama_bench(binary: str, path: Path, threads: int, repeats: int) -> float:
    out = subprocess.run([binary, "-m", str(path), "-p", "0", "-n", str(PROBE_MAX_TOKENS), "-d", "64",
                          "-t", str(threads), "-r", str(repeats), "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    rows = [r for r in json.loads(out) if r.get("n_gen")]
    return float(rows[0]["avg_ts"])


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    ladder, binary = Path(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    print(f"threads {threads}, probe repeats {repeats}, llama-bench -n {PROBE_MAX_TOKENS} -d 64 -r {repeats}")
    print(f"{'variant':<8} {'l.bench tg':>10} {'probe dec':>10} {'ratio':>6}   "
          f"{'probe e2e medians (3 loads)':<30} {'spread':>7}   {'single pass (3 loads)':<24} {'spread':>7}")
    for t in TYPES:
        path = ladder / f"smollm2-{t.lower()}.gguf"
        bench = llama_bench(binary, path, threads, repeats)
        runs = [probe_once(path, threads, repeats) for _ in range(3)]
        decode = statistics.median(p.decode_tokens_per_second.median for p, _ in runs  # type: ignore[union-attr]
                                   )
        medians = [p.tokens_per_second.median for p, _ in runs]  # type: ignore[union-attr]
        singles = [s for _, s in runs]
        print(f"{t:<8} {bench:10.1f} {decode:10.1f} {decode / bench:6.3f}   "
              f"{', '.join(f'{m:.1f}' for m in medians):<30} {spread(medians):7.1%}   "
              f"{', '.join(f'{s:.1f}' for s in singles):<24} {spread(singles):7.1%}")


if __name__ == "__main__":
    main()
