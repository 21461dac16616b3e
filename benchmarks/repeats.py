"""What R sampled repeats of a case cost batched (one prompt, R parallel sequences) against
the same R calls made one after another, on the example's chat cases.

    python benchmarks/repeats.py LADDER_DIR [rungs] [--cases N] [--temperature T]

LADDER_DIR holds smollm2-<type>.gguf files (`quantgate ladder ... --prefix smollm2`); rungs
default to Q4_K_M and F16. For each rung, each case (the chat prompts of
example_project/cases/*.yaml, each case's max_tokens or 48; the first N with --cases) and
R = 1, 4, 8: the sequential path is ``LlamaCppModel.chat`` with seeds s..s+R-1, the batched one
``LlamaCppModel.batch("chat", ...)`` with the same seeds. Both load the model with the
example's llama settings (n_ctx 1024, 2 threads).

The table gives wall time, generated tokens per second, and the ratio of the R repeats' wall
time to one sequential call of the same case; the last lines check the target (8 batched
repeats cost at most 4x one call) and the equality measured (repeats identical to their
sequential call in text and tokens).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_quantgate.backend import Completion, LlamaCppModel  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
LLAMA = {"n_ctx": 1024, "n_threads": 2, "seed": 0}
REPEATS = (1, 4, 8)
SEED = 1000


def cases() -> list[tuple[str, int]]:
    out = []
    for f in sorted((EXAMPLE / "cases").glob("*.yaml")):
        for case in yaml.safe_load(f.read_text())["cases"]:
            out.append((str(case["prompt"]), int(case.get("max_tokens", 48))))
    return out


def same(a: Completion, b: Completion) -> bool:
    return (a.text, a.tokens, a.finish_reason) == (b.text, b.tokens, b.finish_reason)


def run(model: LlamaCppModel, chats: list[tuple[str, int]], temperature: float) -> dict[int, Any]:
    rows: dict[int, dict[str, float]] = {r: {"seq": 0.0, "bat": 0.0, "seq_tok": 0, "bat_tok": 0,
                                             "same": 0, "n": 0, "fallback": 0} for r in REPEATS}
    one_call = 0.0  # one sequential call per case, summed
    for i, (prompt, max_tokens) in enumerate(chats):
        messages = [{"role": "user", "content": prompt}]
        for r in REPEATS:
            seeds = [SEED + i * 10 + k for k in range(r)]
            t0 = time.perf_counter()
            seq = [model.chat(messages, max_tokens=max_tokens,
                              params={"temperature": temperature, "seed": s}) for s in seeds]
            seq_wall = time.perf_counter() - t0
            if r == 1:
                one_call += seq_wall
            request = {"messages": messages, "max_tokens": max_tokens,
                       "params": {"temperature": temperature}}
            t0 = time.perf_counter()
            result = model.batch("chat", request, seeds)
            bat_wall = time.perf_counter() - t0
            row = rows[r]
            row["seq"] += seq_wall
            row["seq_tok"] += sum(c.completion_tokens for c in seq)
            row["n"] += r
            if result is None:
                row["fallback"] += 1
                continue
            row["bat"] += bat_wall
            row["bat_tok"] += result.generated_tokens
            row["same"] += sum(same(b, s) for b, s in zip(result.completions, seq, strict=True))
    return {"rows": rows, "one_call": one_call}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ladder", type=Path)
    ap.add_argument("rungs", nargs="*", default=["Q4_K_M", "F16"])
    ap.add_argument("--cases", type=int, default=0, help="only the first N cases")
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    from llama_cpp import Llama

    chats = cases()[:args.cases] if args.cases else cases()
    print(f"{len(chats)} chat cases, temperature {args.temperature}, seeds {SEED}+\n")
    print("| rung | R | sequential s | batched s | seq tok/s | batched tok/s | speedup "
          "| R batched / one call | identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    checks: list[tuple[str, bool]] = []
    for rung in args.rungs:
        path = args.ladder / f"smollm2-{rung.lower()}.gguf"
        model = LlamaCppModel(Llama(model_path=str(path), verbose=False, **LLAMA))
        try:
            model.batch("chat", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                 "params": {"temperature": 0.7}}, [0, 1])  # warm up, allocate
            out = run(model, chats, args.temperature)
        finally:
            model.close()
        one = out["one_call"]
        for r in REPEATS:
            row = out["rows"][r]
            ratio = row["bat"] / one if one else float("nan")
            fb = f" ({int(row['fallback'])} fell back)" if row["fallback"] else ""
            print(f"| {rung} | {r} | {row['seq']:.2f} | {row['bat']:.2f} | "
                  f"{row['seq_tok'] / row['seq']:.1f} | {row['bat_tok'] / max(row['bat'], 1e-9):.1f} | "
                  f"{row['seq'] / max(row['bat'], 1e-9):.2f}x | {ratio:.2f}x | "
                  f"{int(row['same'])}/{int(row['n'])}{fb} |")
            if r == 8:
                checks.append((f"{rung}: 8 batched repeats <= 4x one call ({ratio:.2f}x)",
                               ratio <= 4.0))
        total = sum(out["rows"][r]["n"] for r in REPEATS)
        same_n = sum(out["rows"][r]["same"] for r in REPEATS)
        checks.append((f"{rung}: every batched repeat identical to its sequential call "
                       f"({int(same_n)}/{int(total)})", same_n == total))
    print()
    for label, ok in checks:
        print(f"- [{'x' if ok else ' '}] {label}")


if __name__ == "__main__":
    main()
