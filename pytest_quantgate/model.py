"""``QuantModel``: what the ``quant_model`` fixture hands a test.

It applies the run's generation defaults (greedy, seeded) and records every call's tokens and
timings for the test that made it, then returns plain text. A deterministic call is first
looked up in the exact result cache (``cache.py``); the model is loaded on the first call the
cache cannot answer, unless the pool loaded it already (speed and memory gates need it live).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from collections.abc import Callable, Mapping, Sequence

import pytest

from .display import show
from .backend import Completion, LoadError, LoadedModel, Message, ModelCrashed, call_with, stop_list
from .cache import ResultCache, canonical, completion_from_dict, completion_to_dict, deterministic, greedy, plain
from .variants import Variant

T = TypeVar("T")


@dataclass(frozen=True)
class CallCache:
    """The result cache as one variant sees it: ``context`` is what keys every answer of this
    variant besides the request (file hash, llama.cpp build, llama settings, backend)."""

    cache: ResultCache
    context: Mapping[str, Any]
    on_hit: Callable[[Completion | None], None]  # the pool counts it and keeps a completion's tokens

    def request(self, op: str, **parts: Any) -> dict[str, Any] | None:
        """The full key document, or None when the call cannot be cached (not JSON data, or
        sampled without a fixed seed)."""
        params = parts.get("params", {})
        if not plain(parts) or (op in ("complete", "chat") and not deterministic(op, params)):
            return None
        return {"context": dict(self.context), "op": op, **parts}


class QuantModel:
    def __init__(
        self,
        variant: Variant,
        acquire: Callable[[], LoadedModel],
        generation: Mapping[str, Any],
        seed: int | None,
        measured: Callable[..., Any],  # (loaded, call, bill=True)
        n_ctx: int | None = None,
        cache: CallCache | None = None,
        transcript: Callable[[dict[str, Any]], None] | None = None,
        on_shared: Callable[[Completion, int], None] | None = None,
        on_batch: Callable[[Any], None] | None = None,
    ) -> None:
        self._on_batch = on_batch  # a batched decode's figures (batched.BatchResult), for the pool
        self.variant = variant
        self._on_shared = on_shared  # (answer, batch size): a repeat served by an earlier decode
        self.repeat: int | None = None  # the running test's repeat (rubric repeats > 1), or None
        self.repeats = 1  # how many repeats its case has
        self._case: str | None = None  # the case whose repeats ``_shared`` holds answers for
        self._first: int | None = None  # its first repeat in this run: the one that batches
        self._shared: dict[str, tuple[Completion, int]] = {}  # request -> (answer, batch size)
        self._transcript = transcript  # receives each call's transcript, for the test's record
        self._acquire = acquire  # the loaded model, loading it on first use (raises LoadError)
        self._cache = cache
        self._max_tokens = int(generation.get("max_tokens", 64))
        self._params = {k: v for k, v in generation.items() if k != "max_tokens"}
        if seed is not None:
            self._params.setdefault("seed", seed)
        self._measured = measured  # makes the call and records its tokens, timings, memory
        self._n_ctx = n_ctx
        self.last: Completion | None = None  # the most recent call, for tests that want figures
        self.last_scores: list[float] = []
        self.last_perplexity: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.variant.name

    def begin(self, case: str, repeat: int | None, repeats: int) -> None:
        """The fixture, before each test: which case and repeat the next calls belong to. The
        answers decoded for one case's repeats are kept until another case begins."""
        if case != self._case:
            self._shared.clear()
            self._case, self._first = case, repeat  # the first of its repeats this run makes
        self.repeat, self.repeats = repeat, repeats

    @property
    def llm(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (None if the backend keeps the model elsewhere);
        loads the variant if it is not loaded yet."""
        __tracebackhide__ = True
        return self._loaded().llm

    def _loaded(self) -> LoadedModel:
        __tracebackhide__ = True
        try:
            return self._acquire()
        except LoadError as exc:
            reason = str(exc)
        pytest.fail(reason, pytrace=False)  # outside the except: no chained traceback

    def generate(self, prompt: str, *, max_tokens: int | None = None,
                 stop: str | Sequence[str] | None = None, **kw: Any) -> str:
        """Raw completion of ``prompt``; greedy and seeded unless ``kw`` says otherwise.
        ``stop`` is one string or a list of strings."""
        __tracebackhide__ = True
        if not isinstance(prompt, str) or not prompt:
            _misuse(f"generate: expected a non-empty prompt string, got {_brief(prompt)}")
        if stop is not None and not (isinstance(stop, str) or (
                isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop))):
            _misuse(f"generate: stop: expected a string or a list of strings, got {_brief(stop)}")
        n = self._tokens_budget("generate", max_tokens)
        stops, params = stop_list(stop), {**self._params, **kw}
        return self._run("complete", dict(prompt=prompt, max_tokens=n, stop=stops, params=params))

    def chat(self, message_or_messages: str | Sequence[Message], *, max_tokens: int | None = None,
             system: str | None = None, **kw: Any) -> str:
        """One user message (or a full message list) through the model's chat template."""
        __tracebackhide__ = True
        if isinstance(message_or_messages, str):
            if not message_or_messages:
                _misuse("chat: the message is empty")
            messages: list[Message] = [{"role": "user", "content": message_or_messages}]
        elif isinstance(message_or_messages, (list, tuple)) and message_or_messages and all(
                isinstance(m, Mapping) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in message_or_messages):
            messages = list(message_or_messages)
        else:
            _misuse("chat: expected a message string or a non-empty list of "
                    f"{{'role': str, 'content': str}} messages, got {_brief(message_or_messages)}")
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        n = self._tokens_budget("chat", max_tokens)
        params = {**self._params, **kw}
        return self._run("chat", dict(messages=[dict(m) for m in messages], max_tokens=n, params=params))

    def _tokens_budget(self, fn: str, max_tokens: int | None) -> int:
        """``None`` is the configured default; anything else must be a real budget: 0 or -1
        would silently mean "the default" or "up to n_ctx" in llama-cpp-python."""
        __tracebackhide__ = True
        if max_tokens is None:
            return self._max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            _misuse(f"{fn}: max_tokens: expected a positive integer, got {_brief(max_tokens)}")
        if self._n_ctx is not None and max_tokens > self._n_ctx:
            _misuse(f"{fn}: max_tokens={max_tokens} exceeds the context (llama.n_ctx {self._n_ctx}); "
                    "lower it or raise n_ctx in quantgate.yaml")
        return max_tokens

    def _run(self, op: str, request: dict[str, Any]) -> str:
        """Answer from the cache, or make the call, record it and cache it; return its text. A
        crashed worker fails the test cleanly.

        Under repeats, a sampled call runs with its repeat's seed (seed + repeat); the case's
        first repeat decodes the call for every repeat at once as parallel sequences
        (``_decode_repeats``) and the others take their answers from it. A greedy call is
        made by the first repeat and its answer serves the others.
        """
        __tracebackhide__ = True
        sampled = not greedy(op, request["params"])
        base = 0
        if self.repeat is not None and sampled:
            seed = request["params"].get("seed")
            base = seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0
            request = {**request, "params": {**request["params"], "seed": base + self.repeat}}
        memo = _memo_key(op, request) if self.repeat is not None else None
        shared = self._shared.get(memo) if memo is not None else None
        looked, key, hit = False, None, None
        if shared is None and memo is not None and sampled and self.repeats > 1 and self.repeat == self._first:
            # A call first seen at a later repeat (a follow-up turn that quotes this repeat's
            # own answer) is made alone: batching it would decode R answers to use one.
            looked, (key, hit) = True, self._lookup(op, request, completion_from_dict)
            # answered alone before (the backend could not batch it): the same answer, since
            # a batch's answers are exactly the single calls'; no model needed
            if hit is None and self._decode_repeats(op, request, base):
                shared = self._shared.get(memo or "")
        if shared is not None:
            c, batch = shared
            if c.cached:  # a batch's answer from the result cache, counted when a repeat uses it
                self._on_hit(c)
            elif self._on_shared is not None:
                self._on_shared(c, batch)
            self._record(op, request, c, batch=batch, reused=not sampled)
        else:
            if not looked:
                key, hit = self._lookup(op, request, completion_from_dict)
            if hit is not None:
                self._on_hit(hit)
                c = hit
            else:
                c = self._live(lambda m: call_with(m, op, request))
                self._store(key, completion_to_dict(c))
            if memo is not None and not sampled:
                self._shared[memo] = (c, 1)
            self._record(op, request, c)
        self.last = c
        return c.text

    def _decode_repeats(self, op: str, request: dict[str, Any], base: int) -> bool:
        """Decode every repeat of this sampled call at once: the prompt once, then one
        sequence per repeat with its own seed (``batched.py``), answers kept for the case's
        other repeats. False when the backend cannot batch the call: then nothing is kept and
        each repeat makes it alone with its seed (the same answers: batches are exact)."""
        __tracebackhide__ = True
        seeds = [base + r for r in range(self.repeats)]
        asks = [{**request, "params": {**request["params"], "seed": s}} for s in seeds]
        # keyed apart from single calls: a batch's answer is a batch's, bit for bit
        found = [self._lookup(op, {**a, "batch": self.repeats}, completion_from_dict) for a in asks]
        answers = [hit for _, hit in found if hit is not None]
        if len(answers) < len(asks):
            loaded = self._loaded()
            decode = getattr(loaded, "batch", None)
            if decode is None:
                return False
            result = self._live(lambda _: decode(op, request, seeds), bill=False)
            if result is None:
                return False
            answers = list(result.completions)
            for (key, _), c in zip(found, answers, strict=True):
                self._store(key, completion_to_dict(c))
            if self._on_batch is not None:
                self._on_batch(result)
        for a, c in zip(asks, answers, strict=True):
            k = _memo_key(op, a)
            if k is not None:
                self._shared[k] = (c, self.repeats)
        return True

    def _lookup(self, op: str, request: dict[str, Any],
                parse: Callable[[Any], T | None]) -> tuple[dict[str, Any] | None, T | None]:
        """(the call's cache key, the cached answer): (None, None) when it cannot be cached."""
        if self._cache is None:
            return None, None
        key = self._cache.request(op, **request)
        return key, (None if key is None else self._cache.cache.get(key, parse))

    def _store(self, key: dict[str, Any] | None, result: Any) -> None:
        if self._cache is not None and key is not None:
            self._cache.cache.put(key, result)

    def _on_hit(self, hit: Completion | None) -> None:
        if self._cache is not None:
            self._cache.on_hit(hit)

    def _record(self, op: str, request: dict[str, Any], c: Completion, *, batch: int = 1,
                reused: bool = False) -> None:
        if self._transcript is None:
            return
        prompt = c.prompt_text or (request["prompt"] if op == "complete" else "\n".join(
            f"{m['role']}: {m['content']}" for m in request["messages"]))  # a backend without tokens
        entry = transcript(op, prompt, c.text, c)
        if self.repeat is not None:
            entry["repeat"] = self.repeat
            entry["seed"] = request["params"].get("seed")
            entry["batch"] = batch  # sequences decoded together with this one
            entry["reused"] = reused  # a greedy answer made once for every repeat
        self._transcript(entry)

    def _live(self, call: Callable[[LoadedModel], T], bill: bool = True) -> T:
        __tracebackhide__ = True
        loaded = self._loaded()
        try:
            result: T = self._measured(loaded, lambda: call(loaded), bill=bill)
        except ModelCrashed as exc:
            crash = str(exc)
        else:
            return result
        pytest.fail(crash, pytrace=False)  # outside the except: no chained traceback

    # -- scoring: log-likelihood, multiple choice, perplexity (in-process placement) ----------
    def _scorer(self) -> Any:
        from .fidelity import Scorer

        if self.llm is None:
            pytest.fail(f"{self.variant.name}: scoring needs the model in the test process; "
                        "set isolation: none", pytrace=False)
        return Scorer(self.llm)

    def logprob(self, prompt: str, continuation: str) -> float:
        """Sum of log p(continuation | prompt), teacher-forced; no text is generated."""
        __tracebackhide__ = True
        for what, text in (("prompt", prompt), ("continuation", continuation)):
            if not isinstance(text, str) or not text:
                _misuse(f"logprob: {what}: expected a non-empty string, got {_brief(text)}")
        return float(self._score("logprob", {"prompt": prompt, "continuation": continuation},
                                 lambda s: s.logprob(prompt, continuation))[0])

    def choose(self, prompt: str, options: Sequence[str], *, normalize: bool = False) -> int:
        """Index of the most likely option (lm-evaluation-harness style multiple choice).

        The prompt is evaluated once and its KV cache reused for every option; with
        ``normalize`` scores are divided by each option's length in bytes (``acc_norm``).
        ``.last_scores`` keeps every option's score.
        """
        __tracebackhide__ = True
        if not isinstance(prompt, str) or not prompt:
            _misuse(f"choose: prompt: expected a non-empty string, got {_brief(prompt)}")
        if isinstance(options, str) or not isinstance(options, Sequence) or not options:
            _misuse(f"choose: options: expected a non-empty list of strings, got {_brief(options)}")
        for i, opt in enumerate(options):
            if not isinstance(opt, str) or not opt:
                _misuse(f"choose: options[{i}]: expected a non-empty string, got {_brief(opt)}")
        best, scores = self._score("choose", {"prompt": prompt, "options": list(options), "normalize": normalize},
                                   lambda s: s.choose(prompt, options, normalize=normalize))
        self.last_scores = [float(x) for x in scores]
        return int(best)

    def perplexity(self, text: str, *, n_ctx: int | None = None) -> float:
        """Perplexity of ``text`` with llama-perplexity's rules: chunks of ``n_ctx`` tokens
        (default: the model's), only the second half of each chunk scored."""
        from .fidelity import perplexity

        __tracebackhide__ = True
        if not isinstance(text, str) or not text:
            _misuse(f"perplexity: expected a non-empty text, got {_brief(text)}")
        if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 4):
            _misuse(f"perplexity: n_ctx: expected an integer of at least 4 (half of each chunk is "
                    f"scored), got {_brief(n_ctx)}")
        result = self._score("perplexity", {"text": text, "n_ctx": n_ctx}, lambda s: perplexity(s, text, n_ctx))
        self.last_perplexity = result
        return float(result["perplexity"])

    def _score(self, fn: str, request: dict[str, Any], run: Callable[[Any], Any]) -> Any:
        """Run a scoring function (or answer it from the cache: scores are deterministic); its
        input problems (too long for the context, nothing to score) fail the test with one
        line instead of a traceback from numpy or llama.cpp."""
        import json

        from .fidelity import ScoringError

        __tracebackhide__ = True
        key, hit = self._lookup(fn, request, _SCORE_SHAPES[fn])
        if hit is not None:
            self._on_hit(None)
            self._record_score(fn, request, hit, cached=True)
            return hit
        scorer = self._scorer()
        try:
            result = self._live(lambda _: run(scorer))
        except ScoringError as exc:
            problem = str(exc)
        else:
            self._store(key, json.loads(json.dumps(result)))  # tuples as lists
            self._record_score(fn, request, result, cached=False)
            return result
        _misuse(f"{fn}: {problem}")

    def _record_score(self, fn: str, request: dict[str, Any], result: Any, *, cached: bool) -> None:
        """A scoring call's transcript: what was scored and the score, in words."""
        if self._transcript is None:
            return
        if fn == "logprob":
            prompt, reply = request["prompt"], f"log p({request['continuation']!r}) = {float(result[0]):.4f}"
        elif fn == "choose":
            prompt = request["prompt"]
            reply = f"chose {request['options'][int(result[0])]!r} of " + ", ".join(
                f"{o!r} ({float(s):.3f})" for o, s in zip(request["options"], result[1], strict=False))
        else:
            prompt = request["text"]
            reply = f"perplexity {float(result['perplexity']):.3f} over {result['tokens_scored']} tokens"
        self._transcript(transcript(fn, prompt, reply, None, cached=cached))

    def __repr__(self) -> str:
        return f"<QuantModel {self.variant.name} {self.variant.path.name}>"


def _memo_key(op: str, request: Mapping[str, Any]) -> str | None:
    """The request as one canonical string; None when it is not plain data."""
    return canonical([op, request]) if plain(dict(request)) else None


TRANSCRIPT_CHARS = 4000  # per prompt or reply: a long document prompt must not swell the report


def transcript(op: str, prompt: str, reply: str, c: Completion | None, *, cached: bool = False) -> dict[str, Any]:
    """One call as the report shows it: what the model read, what it answered, what it cost."""
    return {"op": op, "prompt": _clip(prompt), "reply": _clip(reply),
            "prompt_tokens": c.prompt_tokens if c else 0,
            "completion_tokens": c.completion_tokens if c else 0,
            "wall_seconds": c.wall_seconds if c else 0.0,
            "finish_reason": c.finish_reason if c else None,
            "cached": c.cached if c else cached}


def _clip(text: str) -> str:
    if len(text) <= TRANSCRIPT_CHARS:
        return text
    return text[:TRANSCRIPT_CHARS] + f" ... [{len(text) - TRANSCRIPT_CHARS} more characters]"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# What a cached scoring result must look like to be used (entries are data, never trusted).
_SCORE_SHAPES: dict[str, Callable[[Any], Any]] = {
    "logprob": lambda r: r if isinstance(r, list) and len(r) == 2 and _number(r[0]) and _count(r[1]) else None,
    "choose": lambda r: r if (isinstance(r, list) and len(r) == 2 and _count(r[0]) and isinstance(r[1], list)
                              and r[1] and r[0] < len(r[1]) and all(map(_number, r[1]))) else None,
    "perplexity": lambda r: r if (isinstance(r, dict) and _number(r.get("perplexity"))
                                  and _count(r.get("tokens_scored")) and _count(r.get("chunks"))) else None,
}


def _misuse(message: str) -> NoReturn:
    """A call the model cannot answer: the test fails with one line naming the call."""
    __tracebackhide__ = True
    pytest.fail(f"quant_model.{message}", pytrace=False)


def _brief(value: Any) -> str:
    return show(value)
