"""Batched sampled repeats (pytest_quantgate/batched.py) against the sequential calls they
replace, on the real SmolLM2 ladder.

What is asserted is what was measured: with one KV stream per sequence and at most
``exact_group(llm)`` tokens per decode (3 on K-quant rungs, 1 on F16/Q8_0/Q4_0), every repeat's
text, tokens, finish_reason and counts are identical to ``LlamaCppModel.chat/complete`` with
that seed. (With a unified KV pool or 8 tokens per decode they are not: on Q2_K 15 of 16
answers drifted, from the 2nd to the 18th token; on Q4_K_M 14 of 24 with 8 per decode; on F16
1 in 24 with 3 per decode. The first sampled token, read from the shared prompt's logits, was
identical in every case; ``test_unified_pool_first_token`` keeps that part checked.)
"""

from __future__ import annotations

import glob
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pytest_quantgate.backend import Completion, LlamaCppModel
from pytest_quantgate.batched import BatchContext, decode_repeats

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
LLAMA = {"n_ctx": 1024, "n_threads": 2, "seed": 0}  # as example_project/quantgate.yaml
SEED = 11


def _chat_prompts() -> list[str]:
    cases: list[dict[str, Any]] = []
    for f in sorted(glob.glob(str(EXAMPLE / "cases" / "*.yaml"))):
        cases += yaml.safe_load(Path(f).read_text())["cases"]
    # one of each slice: arithmetic (stops early), facts, format (longer replies)
    picked = [cases[0]["prompt"], cases[-1]["prompt"]]
    picked += [c["prompt"] for c in cases if "capital of France" in c["prompt"]]
    return picked


CHAT = _chat_prompts()
COMPLETE = "Q: What is the capital of Italy?\nA:"


@pytest.fixture(scope="module")
def models(ladder: Any) -> Any:
    from llama_cpp import Llama

    loaded: dict[str, LlamaCppModel] = {}

    def get(rung: str) -> LlamaCppModel:
        if rung not in loaded:
            loaded[rung] = LlamaCppModel(Llama(model_path=str(ladder.files[rung]), verbose=False,
                                               **LLAMA))
        return loaded[rung]

    yield get
    for m in loaded.values():
        m.close()


def same(a: Completion, b: Completion) -> bool:
    return ((a.text, a.tokens, a.finish_reason, a.prompt_tokens, a.completion_tokens,
             a.prompt_text) ==
            (b.text, b.tokens, b.finish_reason, b.prompt_tokens, b.completion_tokens,
             b.prompt_text))


def sequential(model: Any, op: str, request: dict[str, Any], seeds: list[int]) -> list[Completion]:
    out = []
    for s in seeds:
        params = {**request["params"], "seed": s}
        if op == "chat":
            out.append(model.chat(request["messages"], max_tokens=request["max_tokens"],
                                  params=params))
        else:
            out.append(model.complete(request["prompt"], max_tokens=request["max_tokens"],
                                      stop=request["stop"], params=params))
    return out


def chat_request(prompt: str, temperature: float, max_tokens: int = 48) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "params": {"temperature": temperature}}


@pytest.mark.parametrize("rung", ["F16", "Q4_K_M", "Q2_K"])
@pytest.mark.parametrize(("temperature", "repeats"), [(0.7, 4), (1.0, 8)])
def test_identical_to_sequential(models: Any, rung: str, temperature: float,
                                 repeats: int) -> None:
    model = models(rung)
    seeds = list(range(SEED, SEED + repeats))
    requests = [("chat", chat_request(p, temperature)) for p in CHAT]
    requests.append(("complete", {"prompt": COMPLETE, "max_tokens": 24, "stop": ["\n"],
                                  "params": {"temperature": temperature}}))
    differ = []
    for op, request in requests:
        result = model.batch(op, request, seeds)
        assert result is not None
        assert result.sequences == repeats and len(result.completions) == repeats
        assert result.prompt_tokens == result.completions[0].prompt_tokens
        assert result.generated_tokens == sum(c.completion_tokens for c in result.completions)
        answers = sequential(model, op, request, seeds)
        for r, (b, s) in enumerate(zip(result.completions, answers, strict=True)):
            # the first sampled token comes from the shared prompt's logits
            assert b.tokens[:b.prompt_tokens + 1] == s.tokens[:s.prompt_tokens + 1]
            if not same(b, s):
                differ.append((op, request.get("prompt") or request["messages"][0]["content"],
                               r, b.text, s.text))
    assert not differ, differ
    # the model's own check of its first batch found the measured configuration exact
    assert model.batch_check is not None and model.batch_check.startswith("verified"), model.batch_check


def test_an_inexact_batch_is_caught_by_the_first_batch_check(ladder: Any) -> None:
    """A configuration measured to drift (a shared KV pool, 8 tokens per decode on Q2_K) is
    what another CPU's kernels could do to the default one: the model's first batch is
    checked against single calls, decoded again one token per decode, and every answer
    returned is the single call's."""
    from llama_cpp import Llama

    model = LlamaCppModel(Llama(model_path=str(ladder.files["Q2_K"]), verbose=False, **LLAMA))
    try:
        model._batch_context = BatchContext(unified=True, group=8)
        seeds = list(range(SEED, SEED + 8))
        request = chat_request(CHAT[-1], 1.0)
        result = model.batch("chat", request, seeds)
        assert model.batch_check is not None and "differed from the single call" in model.batch_check
        assert "one token per decode is exact: used from now on" in model.batch_check
        assert result is not None and result.check == model.batch_check
        for b, s in zip(result.completions, sequential(model, "chat", request, seeds), strict=True):
            assert same(b, s)
    finally:
        model.close()


def test_identical_through_worker(ladder: Any, models: Any) -> None:
    from pytest_quantgate.worker import WorkerModel

    variant: Any = SimpleNamespace(name="Q4_K_M", path=ladder.files["Q4_K_M"])
    worker = WorkerModel(variant, LLAMA)
    try:
        seeds = list(range(SEED, SEED + 4))
        request = chat_request(CHAT[1], 1.0)
        result = worker.batch("chat", request, seeds)
        assert result is not None and worker.memory_bytes and worker.memory_bytes > 0
        in_process = sequential(models("Q4_K_M"), "chat", request, seeds)
        through_worker = sequential(worker, "chat", request, seeds)
        for b, s, w in zip(result.completions, in_process, through_worker, strict=True):
            assert same(b, s) and same(b, w)
            assert isinstance(b.tokens, tuple) and b.wall_seconds > 0
        assert worker.batch("chat", {**request, "params": {"temperature": 0.0}}, seeds) is None
    finally:
        worker.close()


def test_reproducible_and_single(models: Any) -> None:
    model = models("Q4_K_M")
    request = chat_request(CHAT[2], 1.0)
    a = model.batch("chat", request, [5, 6, 7])
    b = model.batch("chat", request, [5, 6, 7])
    assert a is not None and b is not None
    assert [c.tokens for c in a.completions] == [c.tokens for c in b.completions]
    one = model.batch("chat", request, [6])
    assert one is not None and same(one.completions[0], a.completions[1])
    assert same(one.completions[0], sequential(model, "chat", request, [6])[0])
    # a context of its own (not the model's cached one) gives the same answers
    fresh = decode_repeats(model.llm, "chat", request, [5, 6, 7])
    assert fresh is not None and [c.tokens for c in fresh.completions] == \
        [c.tokens for c in a.completions]


def test_sequences_end_independently(models: Any) -> None:
    """A sequence ending early (EOS, a stop string) stops; the others go on."""
    model = models("Q2_K")
    seeds = list(range(SEED, SEED + 8))
    request = {"prompt": "List some fruits: apple, banana,", "max_tokens": 32, "stop": ["."],
               "params": {"temperature": 1.0}}
    result = model.batch("complete", request, seeds)
    assert result is not None
    reasons = {c.finish_reason for c in result.completions}
    lengths = {c.completion_tokens for c in result.completions}
    assert "stop" in reasons and len(lengths) > 1, (reasons, lengths)
    for b, s in zip(result.completions, sequential(model, "complete", request, seeds),
                    strict=True):
        assert same(b, s)
    chat = model.batch("chat", chat_request(CHAT[0], 1.0), seeds)  # "Reply with only the number"
    assert chat is not None
    assert any(c.finish_reason == "stop" for c in chat.completions)
    assert len({c.completion_tokens for c in chat.completions}) > 1


@pytest.mark.parametrize("params", [
    {"temperature": 0.0}, {"temperature": -1.0}, {"temperature": 0.8, "grammar": "x"},
    {"temperature": 0.8, "logit_bias": {1: 2.0}}, {"temperature": 0.8, "mirostat_mode": 2},
    {"temperature": 0.8, "logprobs": 2}, {"temperature": 0.8, "no_such_key": 1},
    {"temperature": 0.8, "logits_processor": [lambda ids, s: s]},
])
def test_unsupported_returns_none(models: Any, params: dict[str, Any]) -> None:
    model = models("Q4_K_M")
    request = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
               "params": params}
    assert model.batch("chat", request, [1, 2]) is None


def test_too_big_or_bad_seeds_return_none(models: Any) -> None:
    model = models("Q4_K_M")
    big = chat_request(CHAT[0], 0.8, max_tokens=1000)  # one reply alone overruns n_ctx=1024
    assert model.batch("chat", big, [1, 2]) is None
    assert model.batch("chat", chat_request(CHAT[0], 0.8), [-1, 0]) is None
    assert model.batch("chat", chat_request(CHAT[0], 0.8), []) is None
    assert model.batch("embed", chat_request(CHAT[0], 0.8), [1]) is None


def test_unified_pool_first_token(models: Any) -> None:
    """The unified pool (prompt cells shared, one decode per step) is not exact after the
    first token; the first token, sampled from the shared prompt's logits, always is."""
    model = models("Q2_K")
    seeds = list(range(SEED, SEED + 8))
    request = chat_request(CHAT[2], 1.0)
    context = BatchContext(unified=True, group=8)
    try:
        result = decode_repeats(model.llm, "chat", request, seeds, context=context)
    finally:
        context.close()
    assert result is not None
    for b, s in zip(result.completions, sequential(model, "chat", request, seeds),
                    strict=True):
        assert b.tokens[:b.prompt_tokens + 1] == s.tokens[:s.prompt_tokens + 1]
