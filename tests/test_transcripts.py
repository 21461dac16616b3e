"""Transcripts and flipped cases on the real ladder: what the report says the model answered
is what llama.cpp answers to the same request, made independently here."""

from __future__ import annotations

from typing import Any

from llama_cpp import Llama

from quantgate_project import Project

QUESTIONS = ["What is the capital of France? Answer with one word.",
             "What is 7 + 5? Reply with only the number.",
             "Name the largest planet in the solar system. One word.",
             "What colour is the sky on a clear day? One word."]
EXPECT = {"france": "paris", "sum": "12", "planet": "jupiter", "sky": "blue"}
MODULE = f"""
import pytest
pytestmark = pytest.mark.quant_rubric(accuracy=0.5)
EXPECT = {EXPECT!r}

@pytest.mark.parametrize("q", {QUESTIONS!r}, ids=list(EXPECT))
def test_q(quant_model, q, request):
    answer = quant_model.chat(q, max_tokens=12)
    word = EXPECT[request.node.callspec.id.split("-")[-1]]
    assert word in answer.lower(), f"expected {{word}}: {{answer!r}}"
"""


def cases(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    row = next(r for r in report["variants"] if r["name"] == name)
    return {c["key"]: c for c in row["cases"]}


def test_transcripts_are_what_llama_cpp_answers(project: Project) -> None:
    project.config(["F16", "Q2_K"], reference="F16")
    project.pytester.makepyfile(test_qa=MODULE)
    md = project.path / "comment.md"
    result, report = project.run_report(f"--quant-markdown={md}", "--quant-update-baseline")
    # each load announced on its own line, with the file, its size and the load time
    result.stdout.re_match_lines([r"quantgate: loading F16 \(smollm2-f16\.gguf, 270\.9 MB\) \.\.\. \d+\.\d\d s$",
                                  r"quantgate: loading Q2_K \(smollm2-q2_k\.gguf, 88\.2 MB\) \.\.\. \d+\.\d\d s$"])
    for name in ("F16", "Q2_K"):
        llm = Llama(model_path=str(project.ladder.files[name]), n_ctx=512, n_threads=2, seed=0, verbose=False)
        try:
            for q, cid in zip(QUESTIONS, ["france", "sum", "planet", "sky"], strict=True):
                llm.reset()
                live = llm.create_chat_completion(messages=[{"role": "user", "content": q}],
                                                  max_tokens=12, temperature=0.0, seed=0)
                case = cases(report, name)[f"test_qa.py::test_q[{cid}]"]
                (call,) = case["calls"]
                assert call["reply"] == live["choices"][0]["message"]["content"]
                assert call["completion_tokens"] == live["usage"]["completion_tokens"]
                assert call["prompt_tokens"] == live["usage"]["prompt_tokens"]
                # the rendered prompt: the chat template's markers and the question
                assert "<|im_start|>user" in call["prompt"] and q in call["prompt"]
                assert call["op"] == "chat" and call["cached"] is False and call["wall_seconds"] > 0
        finally:
            llm.close()
    # flipped cases are exactly the cases whose pass/fail differs from F16's
    f16, q2 = cases(report, "F16"), cases(report, "Q2_K")
    expected = [k for k in q2 if (q2[k]["outcome"] == "passed") != (f16[k]["outcome"] == "passed")]
    row = next(r for r in report["variants"] if r["name"] == "Q2_K")
    assert [f["key"] for f in row["groups"]["test_qa.py"]["flips"]] == expected
    if expected:
        result.stdout.fnmatch_lines(["Q2_K test_qa.py flipped vs F16: *"])
        first = f16[expected[0]]["calls"][0]["reply"].split()[0]
        assert first in md.read_text()  # both answers side by side in the Markdown
    # against the baseline: a stricter check on "sky" regresses it wherever it passed
    project.pytester.makepyfile(test_qa=MODULE.replace("'sky': 'blue'", "'sky': 'green'"))
    _, again = project.run_report()
    for name in ("F16", "Q2_K"):
        was = cases(report, name)["test_qa.py::test_q[sky]"]["outcome"]
        row = next(r for r in again["variants"] if r["name"] == name)
        base = [f for f in row["groups"]["test_qa.py"]["flips"] if f["against"] == "baseline"]
        assert base == ([{"key": "test_qa.py::test_q[sky]", "against": "baseline", "was": "passed",
                          "now": "miss"}] if was == "passed" else [])
