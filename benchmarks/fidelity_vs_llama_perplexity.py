"""Does the plugin's perplexity and KLD agree with llama.cpp's own llama-perplexity?

    python benchmarks/fidelity_vs_llama_perplexity.py LADDER_DIR LLAMA_PERPLEXITY CORPUS.txt [n_ctx]

LADDER_DIR holds smollm2-<type>.gguf files (as `quantgate ladder --prefix smollm2` writes them);
LLAMA_PERPLEXITY is the llama-perplexity binary built from the llama.cpp source that the
llama-cpp-python sdist vendors (see the README's Development section). Both tools score the same
text, context size and files; the script prints both figures side by side, their relative
difference, the time each took, and whether both order the ladder the same way.

The plugin keeps only the top-k (default 1024) reference log-probs plus the tail mass per
position; llama-perplexity keeps all of them (as 16-bit values). The tail-mass bucket makes our
KLD a lower bound of the full one; the comparison shows by how much.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llama_cpp import Llama

from pytest_quantgate.fidelity import Fidelity, Scorer, TopK, perplexity_chunks

TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
THREADS = 2


def ours(path: Path, text: str, n_ctx: int, ref: list[TopK] | None) -> tuple[dict[str, float], list[TopK], float]:
    t0 = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=THREADS, seed=0, verbose=False)
    scorer = Scorer(llm)
    scored = list(perplexity_chunks(scorer, scorer.chunks(text, n_ctx)))
    tops = [TopK.from_logprobs(lp, nxt, 1024) for lp, nxt in scored]
    fid = Fidelity()
    for (lp, nxt), top in zip(scored, ref or tops, strict=True):
        fid.add(top, lp, nxt)
    llm.close()
    s = fid.summary()
    return {"ppl": s["perplexity"], "kld": s["mean_kld"], "top1": s["top1_agreement"]}, tops, time.perf_counter() - t0


def theirs(binary: str, path: Path, corpus: Path, n_ctx: int, base: Path, make_base: bool) -> tuple[dict[str, float], float]:
    cmd = [binary, "-m", str(path), "-f", str(corpus), "-c", str(n_ctx), "-b", str(n_ctx), "-t", str(THREADS),
           "--kl-divergence-base", str(base)]
    if not make_base:
        cmd.append("--kl-divergence")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log = out.stdout + out.stderr
    if out.returncode != 0:
        raise SystemExit(f"llama-perplexity failed ({out.returncode}):\n{log[-2000:]}")
    if make_base:
        ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))  # type: ignore[union-attr]
        return {"ppl": ppl, "kld": 0.0, "top1": 1.0}, seconds
    ppl = float(re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", log).group(1))  # type: ignore[union-attr]
    kld = float(re.search(r"Mean\s+KLD:\s*(-?[0-9.]+)", log).group(1))  # type: ignore[union-attr]
    top1 = float(re.search(r"Same top p:\s*([0-9.]+)", log).group(1)) / 100  # type: ignore[union-attr]
    return {"ppl": ppl, "kld": kld, "top1": top1}, seconds


def rel(a: float, b: float) -> str:
    return "   -  " if b == 0 else f"{(a - b) / b * 100:+6.2f}%"


def main() -> None:
    ladder, binary, corpus = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    n_ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    text = corpus.read_text()
    base = Path(tempfile.mkdtemp()) / "f16.kld"
    rows = []
    ref: list[TopK] | None = None
    for t in TYPES:
        path = ladder / f"smollm2-{t.lower()}.gguf"
        o, tops, o_s = ours(path, text, n_ctx, ref)
        if ref is None:
            ref = tops
        th, t_s = theirs(binary, path, corpus, n_ctx, base, make_base=(t == "F16"))
        rows.append((t, o, th, o_s, t_s))
    print(f"corpus {corpus.name}, n_ctx {n_ctx}, threads {THREADS}")
    print(f"{'variant':<8} {'PPL ours':>9} {'PPL l.cpp':>9} {'diff':>8}   {'KLD ours':>9} {'KLD l.cpp':>9} {'diff':>8}"
          f"   {'top1 ours':>9} {'top1 l.cpp':>10}   {'s ours':>6} {'s l.cpp':>7}")
    for t, o, th, o_s, t_s in rows:
        print(f"{t:<8} {o['ppl']:9.4f} {th['ppl']:9.4f} {rel(o['ppl'], th['ppl']):>8}   {o['kld']:9.5f} {th['kld']:9.5f} "
              f"{rel(o['kld'], th['kld']):>8}   {o['top1'] * 100:8.2f}% {th['top1'] * 100:9.2f}%   {o_s:6.1f} {t_s:7.1f}")
    by_ppl = [r[0] for r in sorted(rows, key=lambda r: r[1]["ppl"])] == [r[0] for r in sorted(rows, key=lambda r: r[2]["ppl"])]
    by_kld = [r[0] for r in sorted(rows[1:], key=lambda r: r[1]["kld"])] == [r[0] for r in sorted(rows[1:], key=lambda r: r[2]["kld"])]
    print(f"same ladder order by PPL: {by_ppl}; by KLD: {by_kld}")
    print("order by KLD (ours):", " < ".join(r[0] for r in sorted(rows[1:], key=lambda r: r[1]["kld"])))


if __name__ == "__main__":
    main()
