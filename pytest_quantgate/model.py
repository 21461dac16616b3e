"""``QuantModel``: what the ``quant_model`` fixture hands a test.

It applies the run's generation defaults (greedy, seeded) and records every call's tokens and
timings for the test that made it, then returns plain text.
"""

from __future__ import annotations

from typing import Any, NoReturn
from collections.abc import Callable, Mapping, Sequence

import pytest

from .display import show
from .backend import Completion, LoadedModel, Message, ModelCrashed, stop_list
from .variants import Variant


class QuantModel:
    def __init__(
        self,
        variant: Variant,
        loaded: LoadedModel,
        generation: Mapping[str, Any],
        seed: int | None,
        measured: Callable[[Callable[[], Any]], Any],
        n_ctx: int | None = None,
    ) -> None:
        self.variant = variant
        self._loaded = loaded
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

    @property
    def llm(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (None if the backend keeps the model elsewhere)."""
        return self._loaded.llm

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
        return self._run(lambda: self._loaded.complete(
            prompt, max_tokens=n, stop=stop_list(stop), params={**self._params, **kw}))

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
        return self._run(lambda: self._loaded.chat(
            messages, max_tokens=n, params={**self._params, **kw}))

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

    def _run(self, call: Callable[[], Completion]) -> str:
        """Make the call, record it, return its text; a crashed worker fails the test cleanly."""
        __tracebackhide__ = True
        try:
            c: Completion = self._measured(call)
        except ModelCrashed as exc:
            crash = str(exc)
        else:
            self.last = c
            return c.text
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
        return float(self._score("logprob", lambda s: s.logprob(prompt, continuation))[0])

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
        best, self.last_scores = self._score("choose", lambda s: s.choose(prompt, options, normalize=normalize))
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
        result = self._score("perplexity", lambda s: perplexity(s, text, n_ctx))
        self.last_perplexity = result
        return float(result["perplexity"])

    def _score(self, fn: str, run: Callable[[Any], Any]) -> Any:
        """Run a scoring function; its input problems (too long for the context, nothing to
        score) fail the test with one line instead of a traceback from numpy or llama.cpp."""
        from .fidelity import ScoringError

        __tracebackhide__ = True
        scorer = self._scorer()
        try:
            return self._measured(lambda: run(scorer))
        except ScoringError as exc:
            problem = str(exc)
        _misuse(f"{fn}: {problem}")

    def __repr__(self) -> str:
        return f"<QuantModel {self.variant.name} {self.variant.path.name}>"


def _misuse(message: str) -> NoReturn:
    """A call the model cannot answer: the test fails with one line naming the call."""
    __tracebackhide__ = True
    pytest.fail(f"quant_model.{message}", pytrace=False)


def _brief(value: Any) -> str:
    return show(value)
