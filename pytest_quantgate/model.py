"""``QuantModel``: what the ``quant_model`` fixture hands a test.

It applies the run's generation defaults (greedy, seeded) and records every call's tokens and
timings for the test that made it, then returns plain text.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Mapping, Sequence

import pytest

from .backend import Completion, LoadedModel, Message
from .worker import ModelCrashed
from .variants import Variant


class QuantModel:
    def __init__(
        self,
        variant: Variant,
        loaded: LoadedModel,
        generation: Mapping[str, Any],
        seed: int | None,
        record: Callable[[Completion], None],
    ) -> None:
        self.variant = variant
        self._loaded = loaded
        self._max_tokens = int(generation.get("max_tokens", 64))
        self._params = {k: v for k, v in generation.items() if k != "max_tokens"}
        if seed is not None:
            self._params.setdefault("seed", seed)
        self._record = record
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
                 stop: Sequence[str] | None = None, **kw: Any) -> str:
        """Raw completion of ``prompt``; greedy and seeded unless ``kw`` says otherwise."""
        __tracebackhide__ = True
        return self._run(lambda: self._loaded.complete(
            prompt, max_tokens=max_tokens or self._max_tokens, stop=stop, params={**self._params, **kw}))

    def chat(self, message_or_messages: str | Sequence[Message], *, max_tokens: int | None = None,
             system: str | None = None, **kw: Any) -> str:
        """One user message (or a full message list) through the model's chat template."""
        if isinstance(message_or_messages, str):
            messages: list[Message] = [{"role": "user", "content": message_or_messages}]
        else:
            messages = list(message_or_messages)
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        __tracebackhide__ = True
        return self._run(lambda: self._loaded.chat(
            messages, max_tokens=max_tokens or self._max_tokens, params={**self._params, **kw}))

    def _run(self, call: Callable[[], Completion]) -> str:
        """Make the call, record it, return its text; a crashed worker fails the test cleanly."""
        __tracebackhide__ = True
        try:
            c = call()
        except ModelCrashed as exc:
            crash = str(exc)
        else:
            self.last = c
            self._record(c)
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
        return float(self._scorer().logprob(prompt, continuation)[0])

    def choose(self, prompt: str, options: Sequence[str], *, normalize: bool = False) -> int:
        """Index of the most likely option (lm-evaluation-harness style multiple choice).

        The prompt is evaluated once and its KV cache reused for every option; with
        ``normalize`` scores are divided by each option's length in bytes (``acc_norm``).
        ``.last_scores`` keeps every option's score.
        """
        best, self.last_scores = self._scorer().choose(prompt, options, normalize=normalize)
        return int(best)

    def perplexity(self, text: str, *, n_ctx: int | None = None) -> float:
        """Perplexity of ``text`` with llama-perplexity's rules: chunks of ``n_ctx`` tokens
        (default: the model's), only the second half of each chunk scored."""
        from .fidelity import perplexity

        result = perplexity(self._scorer(), text, n_ctx)
        self.last_perplexity = result
        return float(result["perplexity"])

    def __repr__(self) -> str:
        return f"<QuantModel {self.variant.name} {self.variant.path.name}>"
