"""Fidelity to the reference (KLD, top-1, perplexity ratio) and log-likelihood scoring."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from quantgate_project import Ladder, Project
from pytest_quantgate.fidelity import Fidelity, Scorer, TopK, log_softmax, perplexity_chunks

CORPUS = Path(__file__).parent / "data" / "corpus.txt"

FID = """
import pytest
pytestmark = pytest.mark.quant_rubric(max_kld=0.05, min_top1_agreement=0.85, max_perplexity_ratio=1.5)

@pytest.mark.parametrize("q", ["What is the capital of France?", "Name three colors.",
                               "Write a haiku about the sea.", "How do bees make honey?"])
def test_talk(quant_model, q):
    assert quant_model.chat(q, max_tokens=32)
"""


def fidelity(report: dict, name: str, group: str = "test_fid.py") -> dict:  # type: ignore[type-arg]
    v = next(v for v in report["variants"] if v["name"] == name)
    return v["groups"][group]["fidelity"]  # type: ignore[no-any-return]


def test_max_kld_fails_q2_k_and_passes_q8_0(project: Project) -> None:
    project.config(["F16", "Q8_0", "Q2_K"], reference="F16")
    project.pytester.makepyfile(test_fid=FID)
    result, report = project.run_report("-v")
    result.stdout.fnmatch_lines([
        "*test_fid.py::quant_rubric[[]F16[]] PASSED*",
        "*test_fid.py::quant_rubric[[]Q8_0[]] PASSED*",
        "*test_fid.py::quant_rubric[[]Q2_K[]] FAILED*",
        "mean KLD * > 0.05 (p99 *, * positions)",
        "Q2_K test_fid.py fidelity vs F16: mean KLD *, p99 *, top-1 *%, PPL ratio * (* positions)",
        "Q8_0 test_fid.py fidelity vs F16: mean KLD *, p99 *, top-1 *%, PPL ratio * (* positions)",
    ])
    q8, q2 = fidelity(report, "Q8_0"), fidelity(report, "Q2_K")
    assert q8["positions"] == q2["positions"] > 100
    assert q8["mean_kld"] < 0.05 < q2["mean_kld"]
    assert q8["top1_agreement"] > q2["top1_agreement"]
    row = next(v for v in report["variants"] if v["name"] == "Q2_K")
    assert row["fidelity"]["mean_kld"] == pytest.approx(q2["mean_kld"])  # one group: same figure

    # reproducible: a second run gives the same figures to the last digit
    _, again = project.run_report()
    assert fidelity(again, "Q2_K") == q2 and fidelity(again, "Q8_0") == q8

    # without the reference selected: the cached F16 distributions are used
    result3, cached = project.run_report("--quant-variants=Q2")
    assert fidelity(cached, "Q2_K") == q2


def test_without_reference_or_cache_it_says_why(project: Project) -> None:
    project.config(["F16", "Q2_K"], reference="F16")
    project.pytester.makepyfile(test_fid=FID)
    own_cache = project.path / "empty-cache"  # the shared cache may hold F16's distributions
    result = project.pytester.runpytest_subprocess("-o", f"cache_dir={own_cache}", "--quant-variants=Q2")
    result.stdout.fnmatch_lines([
        "*fidelity: reference F16 did not run in this session and no cached distributions match this "
        "setup for test_fid.py; run once with F16 selected*",
    ])


def _independent_logprobs(path: Path, tokens: list[int], n_ctx: int = 512) -> np.ndarray:
    """Log-probs from llama-cpp-python's own logits_all path, not our batch code."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, seed=0, logits_all=True, verbose=False)
    llm.reset()
    llm.eval(tokens)
    out = log_softmax(np.array(llm.scores[: len(tokens)]))
    llm.close()
    return out


def test_scoring_matches_llama_cpp_python_logits_all(ladder: Ladder) -> None:
    from llama_cpp import Llama

    path = ladder.files["Q4_K_M"]
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=2, seed=0, verbose=False)
    scorer = Scorer(llm)
    prompt = "Question: What color is a ripe banana?\nAnswer:"
    options = [" yellow", " purple", " a kind of blue"]
    best, scores = scorer.choose(prompt, options)
    ctx = scorer.tokenize(prompt)
    for opt, got in zip(options, scores, strict=True):
        cont = scorer.tokenize(opt, add_bos=False)
        ref = _independent_logprobs(path, ctx + cont)
        want = sum(ref[len(ctx) - 1 + i, t] for i, t in enumerate(cont))
        # different batch splits round differently in quantized kernels: allow 0.1%
        assert got == pytest.approx(want, rel=1e-3)
        assert scorer.logprob(prompt, opt)[0] == pytest.approx(want, rel=1e-3)
    assert best == int(np.argmax(scores)) == 0
    # normalized scores divide by bytes, so they rank by per-byte likelihood
    _, norm = scorer.choose(prompt, options, normalize=True)
    assert norm == pytest.approx([s / len(o.encode()) for s, o in zip(scores, options, strict=True)])

    # perplexity with llama-perplexity's chunking equals a by-hand computation on the same logits
    text = CORPUS.read_text()
    chunks = scorer.chunks(text, 256)
    assert len(chunks) == len(scorer.tokenize(text)) // 256
    mine = perplexity_chunks(scorer, chunks[:2])
    nll = []
    for chunk in chunks[:2]:
        lp = _independent_logprobs(path, chunk, 256)
        nll += [-lp[j, chunk[j + 1]] for j in range(128, 255)]
    ours = np.concatenate([-lp[np.arange(len(t)), t] for lp, t in mine])
    assert len(ours) == len(nll) == 2 * 127
    assert math.exp(ours.mean()) == pytest.approx(math.exp(np.mean(nll)), rel=1e-3)
    llm.close()


def test_topk_kld_matches_full_kld_on_real_logits(ladder: Ladder) -> None:
    """The top-k + tail storage is a lower bound of the full KLD; check how close on real data."""
    from llama_cpp import Llama

    text = CORPUS.read_text()
    llms = {t: Llama(model_path=str(ladder.files[t]), n_ctx=256, n_threads=2, seed=0, verbose=False) for t in ("F16", "Q2_K")}
    scorers = {t: Scorer(m) for t, m in llms.items()}
    chunk = scorers["F16"].chunks(text, 256)[0]
    p = log_softmax(scorers["F16"].logits(chunk[:-1]))
    q = log_softmax(scorers["Q2_K"].logits(chunk[:-1]))
    full = (np.exp(p) * (p - q)).sum(axis=1).mean()
    fid = Fidelity()
    fid.add(TopK.from_logprobs(p, chunk[1:], 1024), q, chunk[1:])
    assert fid.kld.mean() <= full + 1e-9
    assert fid.kld.mean() == pytest.approx(full, rel=0.05)
    assert fid.top1_same.mean() == pytest.approx((p.argmax(1) == q.argmax(1)).mean())
    for m in llms.values():
        m.close()


def test_choose_and_perplexity_through_the_fixture(project: Project) -> None:
    project.config(["F16", "Q8_0"])
    (project.path / "corpus.txt").write_text(CORPUS.read_text())
    project.pytester.makepyfile(test_mc=textwrap.dedent("""
        import json
        CASES = [("Question: What color is a ripe banana?\\nAnswer:", [" purple", " yellow", " black"]),
                 ("Question: What is the capital of France?\\nAnswer:", [" Paris", " Berlin", " Madrid"]),
                 ("Question: What do bees make?\\nAnswer:", [" steel", " glass", " honey"]),
                 ("Question: What is frozen water called?\\nAnswer:", [" ice", " sand", " smoke"]),
                 ("Question: What is the opposite of hot?\\nAnswer:", [" loud", " tall", " cold"])]

        def test_mc(quant_model):
            picks = [quant_model.choose(p, opts) for p, opts in CASES]
            ppl = quant_model.perplexity(open("corpus.txt").read(), n_ctx=256)
            with open(f"mc-{quant_model.name}.json", "w") as fh:
                json.dump({"picks": picks, "ppl": ppl}, fh)
    """))
    project.run().assert_outcomes(passed=2)
    f16 = json.loads((project.path / "mc-F16.json").read_text())
    q8 = json.loads((project.path / "mc-Q8_0.json").read_text())
    assert f16["picks"] == [1, 0, 2, 0, 2]  # the right answers: questions F16 knows
    assert q8["picks"] == f16["picks"]
    assert 1 < f16["ppl"] < 100 and q8["ppl"] == pytest.approx(f16["ppl"], rel=0.1)


def test_corpus_mode_gates_on_the_teams_text(project: Project) -> None:
    (project.path / "corpus.txt").write_text(CORPUS.read_text())
    project.config(["F16", "Q8_0", "Q2_K"], reference="F16",
                   fidelity={"corpus": "corpus.txt", "n_ctx": 256})
    project.pytester.makepyfile(test_fid=FID)
    result, report = project.run_report()
    q8, q2 = fidelity(report, "Q8_0"), fidelity(report, "Q2_K")
    assert q8["positions"] == q2["positions"] and q8["positions"] % 127 == 0
    assert q2["perplexity_ratio"] > q8["perplexity_ratio"] > 0.9
    assert q2["mean_kld"] > q8["mean_kld"]
