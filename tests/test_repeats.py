"""Sampled repeats on the real ladder: reproducible run to run, each repeat's answer what
llama.cpp gives that repeat alone with its seed, pass rates and pass@k / pass^k that follow
from the repeats' outcomes, greedy calls made once, and a variant that passes greedily but
not when it samples."""

from __future__ import annotations

from typing import Any

import pytest
from llama_cpp import Llama

from pytest_quantgate.repeats import ks, pass_at_k, pass_hat_k

from quantgate_project import Project

QUESTIONS = {"france": ("What is the capital of France? Answer with one word.", "paris"),
             "sum": ("What is 2 + 2? Reply with only the number.", "4"),
             "sky": ("What colour is the sky on a clear day? One word.", "blue")}
MODULE = """
import pytest
pytestmark = pytest.mark.quant_rubric({rubric})
QUESTIONS = {questions!r}

@pytest.mark.parametrize("cid", list(QUESTIONS))
def test_q(quant_model, cid):
    question, word = QUESTIONS[cid]
    answer = quant_model.chat(question, max_tokens=16{kw})
    assert word in answer.lower(), f"expected {{word}}: {{answer!r}}"
"""


def module(rubric: str, kw: str = "") -> str:
    return MODULE.format(rubric=rubric, questions=QUESTIONS, kw=kw)


def row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in report["variants"] if r["name"] == name)  # type: ignore[no-any-return]


def replies(report: dict[str, Any], name: str) -> dict[tuple[str, int], str]:
    return {(c["key"], call["repeat"]): call["reply"] for c in row(report, name)["cases"] for call in c["calls"]}


def test_sampled_repeats_reproduce_and_are_each_what_llama_cpp_answers_alone(project: Project) -> None:
    project.config(["Q4_K_M"], generation={"temperature": 0.8})
    project.pytester.makepyfile(test_qa=module("repeats=4, case_pass_rate=0.5"))
    page = project.path / "report.html"
    first, report = project.run_report("-v", f"--quant-html={page}")
    first.stdout.fnmatch_lines(["*test_q?Q4_K_M-france-rep0? *", "*test_q?Q4_K_M-france-rep3? *"])
    # the HTML page says which repeat and seed made each answer, and that it was batched
    assert "rep3, seed 3, one of 4 parallel sequences" in page.read_text()
    # again, with the model in a worker process: the batch runs there, the same answers
    _, again = project.run_report("--quant-isolation=process")
    answers = replies(report, "Q4_K_M")
    assert len(answers) == 12 and answers == replies(again, "Q4_K_M")
    assert len(set(answers.values())) > 3  # sampling: the repeats do not all say the same
    calls = [call for c in row(report, "Q4_K_M")["cases"] for call in c["calls"]]
    assert [(c["seed"], c["batch"]) for c in calls[:4]] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    for r in (report, again):
        st = row(r, "Q4_K_M")
        assert (st["live_calls"], st["reused_calls"], st["batched"]["batches"], st["batched"]["sequences"]) == (
            12, 12, 3, 12)
    # each repeat alone, through llama-cpp-python's own sampler with the repeat's seed
    llm = Llama(model_path=str(project.ladder.files["Q4_K_M"]), n_ctx=512, n_threads=2, seed=0, verbose=False)
    same = 0
    try:
        for (key, r), text in answers.items():
            cid = key.split("[")[1].rstrip("]")
            llm.reset()
            alone = llm.create_chat_completion(messages=[{"role": "user", "content": QUESTIONS[cid][0]}],
                                               max_tokens=16, temperature=0.8, seed=r)
            same += alone["choices"][0]["message"]["content"] == text
    finally:
        llm.close()
    assert same == len(answers)


def test_pass_rates_and_pass_at_k_follow_from_the_repeats(project: Project) -> None:
    project.config(["Q2_K"], generation={"temperature": 1.0})
    project.pytester.makepyfile(test_qa=module("repeats=8, case_pass_rate=0.5, accuracy=0.5"))
    _, report = project.run_report()
    g = row(report, "Q2_K")["groups"]["test_qa.py"]
    outcomes = {c["key"]: c["repeats"]["outcomes"] for c in row(report, "Q2_K")["cases"]}
    assert len(outcomes) == 3 and all(len(o) == 8 for o in outcomes.values())
    passes = [o.count("passed") for o in outcomes.values()]
    f = g["repeats"]
    assert f["mean_pass_rate"] == pytest.approx(sum(passes) / 24)
    for k in ks(8):
        assert f["pass_at_k"][str(k)] == pytest.approx(sum(pass_at_k(8, c, k) for c in passes) / 3)
        assert f["pass_hat_k"][str(k)] == pytest.approx(sum(pass_hat_k(8, c, k) for c in passes) / 3)
    case_passed = {k: ("passed" if o.count("passed") >= 4 else "miss") for k, o in outcomes.items()}
    assert {k: c["outcome"] for k, c in ((c["key"], c) for c in row(report, "Q2_K")["cases"])} == case_passed
    assert g["passed_cases"] == list(case_passed.values()).count("passed")


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_batched_decodes_are_not_billed_to_the_variants_memory(project: Project, isolation: str) -> None:
    project.config(["Q4_K_M"], generation={"temperature": 0.8}, isolation=isolation)
    project.pytester.makepyfile(test_qa=module("accuracy=0.1"))
    _, single = project.run_report()
    project.pytester.makepyfile(test_qa=module("repeats=8, accuracy=0.1"))
    _, repeated = project.run_report()
    assert row(repeated, "Q4_K_M")["batched"]["sequences"] == 24
    # the batch's own KV streams and buffers are the harness's: the product decodes one sequence
    assert abs(row(repeated, "Q4_K_M")["memory_mb"] - row(single, "Q4_K_M")["memory_mb"]) < 10


def test_greedy_calls_are_made_once_for_every_repeat(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(test_qa=module("repeats=4, accuracy=0.3"))
    _, report = project.run_report()
    st = row(report, "Q2_K")
    assert (st["live_calls"], st["reused_calls"], st["batched"]) == (3, 9, None)
    for case in st["cases"]:
        assert len({call["reply"] for call in case["calls"]}) == 1
        assert [call["reused"] for call in case["calls"]] == [False, True, True, True]
        assert len(set(case["repeats"]["outcomes"])) == 1  # the same answer, the same outcome


def test_a_variant_that_passes_greedily_fails_when_it_samples(project: Project) -> None:
    project.config(["F16", "Q4_K_M"])
    project.pytester.makepyfile(test_greedy=module("accuracy=0.6"),
                                test_sampled=module("repeats=8, accuracy=0.6", kw=", temperature=0.7"))
    result, report = project.run_report()
    for name in ("F16", "Q4_K_M"):
        g = row(report, name)["groups"]
        assert (g["test_greedy.py"]["passed"], g["test_sampled.py"]["passed"]) == (True, False), name
        assert g["test_sampled.py"]["repeats"]["mean_pass_rate"] < 1
    result.stdout.fnmatch_lines(["test_sampled.py on Q4_K_M: 8 repeats, mean pass rate *; a case passes when "
                                 "all its repeats pass; * cases flaky",
                                 "Q4_K_M batched repeats: 3 decodes, 24 sequences, * tok/s over all sequences together*",
                                 "no variant passes the rubric", "  test_greedy.py: smallest passing Q4_K_M",
                                 "  test_sampled.py: no variant passes"])
