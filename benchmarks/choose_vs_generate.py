"""How much cheaper is log-likelihood multiple choice than generating an answer?

    python benchmarks/choose_vs_generate.py MODEL.gguf [example_project/cases/facts.yaml]

Turns each factual case of the example into a 4-way multiple-choice item (its own answer plus
the answers of three other cases as distractors), then on the same loaded model times
`choose()` (prompt decoded once, options scored with its KV cache) against `chat()` (greedy,
max_tokens 48, as the example slice runs). Prints time per case for both, the ratio, and each
method's accuracy, measured side by side in one run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from llama_cpp import Llama

from pytest_quantgate.backend import LlamaCppModel
from pytest_quantgate.checks import contains_any
from pytest_quantgate.fidelity import Scorer


def main() -> None:
    model_path = sys.argv[1]
    cases_path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("example_project/cases/facts.yaml")
    cases = yaml.safe_load(cases_path.read_text())["cases"]
    llm = Llama(model_path=model_path, n_ctx=1024, n_threads=2, seed=0, verbose=False)
    scorer, chat = Scorer(llm), LlamaCppModel(llm)
    answers = [c["expect_any"][0] for c in cases]
    t_choose = t_gen = 0.0
    right_choose = right_gen = 0
    for i, case in enumerate(cases):
        distractors = [answers[(i + k) % len(answers)] for k in (5, 11, 17)]
        options = [" " + answers[i]] + [" " + d for d in distractors]
        prompt = f"Question: {case['prompt']}\nAnswer:"
        t0 = time.perf_counter()
        best, _ = scorer.choose(prompt, options)
        t_choose += time.perf_counter() - t0
        right_choose += best == 0
        t0 = time.perf_counter()
        c = chat.chat([{"role": "user", "content": case["prompt"]}], max_tokens=48,
                      params={"temperature": 0.0, "seed": 0})
        t_gen += time.perf_counter() - t0
        right_gen += bool(contains_any(c.text, case["expect_any"]))
    n = len(cases)
    print(f"{n} cases on {Path(model_path).name}")
    print(f"choose (4 options): {t_choose / n * 1000:7.1f} ms/case   accuracy {right_choose}/{n}")
    print(f"chat (greedy, 48):  {t_gen / n * 1000:7.1f} ms/case   accuracy {right_gen}/{n}")
    print(f"choose is {t_gen / t_choose:.1f}x cheaper per case")
    llm.close()


if __name__ == "__main__":
    main()
