"""Per-call cost of running a variant in a worker process instead of in process.

    python benchmarks/isolation_overhead.py path/to/model.gguf [calls]

Runs the same greedy calls both ways, side by side in one run, and prints the wall time per
call, the difference, and the ratio. Short replies (4 tokens) make the pipe's share as large
as it gets; real eval calls are longer, so the relative overhead there is smaller still.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from pytest_quantgate.backend import LlamaCppBackend
from pytest_quantgate.variants import Variant, inspect_file
from pytest_quantgate.worker import WorkerBackend

PROMPTS = ["Say hi.", "Name a color.", "What is 2 + 2?", "Name a fruit."]
LLAMA = {"n_ctx": 512, "n_threads": 2, "seed": 0}


def per_call(model: object, calls: int) -> list[float]:
    times = []
    for i in range(calls):
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.perf_counter()
        model.chat([{"role": "user", "content": prompt}], max_tokens=4,  # type: ignore[attr-defined]
                   params={"temperature": 0.0, "seed": 0})
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    path = Path(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    info, digest = inspect_file(path)
    variant = Variant(info.file_type, path, info.size_bytes, info.file_type, digest, info)
    results = {}
    for name, backend in (("in-process", LlamaCppBackend()), ("worker", WorkerBackend())):
        t0 = time.perf_counter()
        model = backend.load(variant, llama_kwargs=LLAMA)
        load = time.perf_counter() - t0
        per_call(model, 4)  # warm up caches and threads
        # interleave would share the cores between two resident models; run back to back
        times = per_call(model, calls)
        model.close()
        results[name] = (load, statistics.median(times), statistics.mean(times))
        print(f"{name:<11} load {load * 1000:7.1f} ms   per call median {results[name][1] * 1000:7.2f} ms"
              f"   mean {results[name][2] * 1000:7.2f} ms")
    (_, a, _), (_, b, _) = results["in-process"], results["worker"]
    print(f"worker overhead per call: {(b - a) * 1000:+.2f} ms (median), ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
