"""Where a model lives. ``Backend``/``LoadedModel`` are the one seam between the plugin and
llama.cpp; the default backend loads GGUF files in process through llama-cpp-python.

A backend returns ``Completion`` records that carry llama.cpp's own counters next to the text,
so speed is measured by the same code path whatever the placement.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from collections.abc import Mapping, Sequence

from .completion import Completion, stop_list

if TYPE_CHECKING:
    from .batched import BatchContext, BatchResult
    from .variants import Variant

Message = Mapping[str, str]
__all__ = ["Completion", "stop_list"]  # re-exported: backends build Completion records


class LoadError(Exception):
    """The backend could not load a variant (or its worker died); its tests fail with this."""


class ModelCrashed(Exception):
    """The placement holding the model died (a native crash, a killed worker); the message
    names the variant and how. Raised by a call; ``LoadedModel.crashed`` keeps it after."""


@runtime_checkable
class LoadedModel(Protocol):
    """A variant resident somewhere, ready for calls: what ``pytest_quantgate_load_model``
    returns. ``llm`` is None when the model is not in this process; ``crashed`` is the crash
    message once the placement has died; ``memory_bytes`` is what the placement measured of
    itself (None: the pool measures this process's RSS around load and calls)."""

    @property
    def llm(self) -> Any: ...

    @property
    def crashed(self) -> str | None: ...

    @property
    def memory_bytes(self) -> int | None: ...

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str] | None,
                 params: Mapping[str, Any]) -> Completion: ...

    def chat(self, messages: Sequence[Message], *, max_tokens: int,
             params: Mapping[str, Any]) -> Completion: ...

    def close(self) -> None: ...


def call_with(m: LoadedModel, op: str, request: Mapping[str, Any]) -> Completion:
    """Make the call a request document describes (``complete``: prompt, max_tokens, stop,
    params; ``chat``: messages, max_tokens, params): how the result cache, repeats and the
    batch check spell a call."""
    if op == "complete":
        return m.complete(request["prompt"], max_tokens=request["max_tokens"], stop=request["stop"],
                          params=request["params"])
    return m.chat(request["messages"], max_tokens=request["max_tokens"], params=request["params"])


class LlamaCppModel:
    """An in-process ``llama_cpp.Llama``; every call starts from an empty KV cache.

    Resetting per call costs a re-read of the prompt but makes each answer independent of the
    calls before it, so ``-k`` subsets and reorderings reproduce the full run's answers exactly.
    """

    crashed: str | None = None  # in process: a native crash takes the process with it
    memory_bytes: int | None = None  # measured by the pool around load and calls

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._batch_context: BatchContext | None = None  # made on the first batch, kept
        self._batch_off = False  # batched answers differed from single calls: no more batches
        self.batch_check: str | None = None  # the first batch checked against single calls

    @property
    def llm(self) -> Any:
        return self._llm

    def _timed(self, fn: Any, **kwargs: Any) -> tuple[dict[str, Any], float, Any]:
        import llama_cpp

        llm = self._llm
        llm.reset()
        ctx = llm._ctx.ctx  # the raw llama_context: llama-cpp-python has no public accessor
        llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        out = fn(**kwargs)
        wall = time.perf_counter() - t0
        return out, wall, llama_cpp.llama_perf_context(ctx)

    def _completion(self, out: dict[str, Any], wall: float, perf: Any, text: str) -> Completion:
        usage = out.get("usage") or {}
        tokens = tuple(int(t) for t in self._llm.input_ids[: self._llm.n_tokens])
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=int(usage.get("completion_tokens", 0)),
            wall_seconds=wall,
            prompt_eval_tokens=int(perf.n_p_eval),
            prompt_eval_ms=float(perf.t_p_eval_ms),
            eval_tokens=int(perf.n_eval),
            eval_ms=float(perf.t_eval_ms),
            finish_reason=out["choices"][0].get("finish_reason"),
            tokens=tokens,
            # the transcript shows what the model read: the chat template's markers included
            prompt_text=self._llm.detokenize(list(tokens[:prompt_tokens]), special=True).decode(
                "utf-8", errors="replace"),
        )

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str] | None,
                 params: Mapping[str, Any]) -> Completion:
        out, wall, perf = self._timed(
            self._llm.create_completion, prompt=prompt, max_tokens=max_tokens,
            stop=stop_list(stop), **params,
        )
        return self._completion(out, wall, perf, out["choices"][0]["text"])

    def chat(self, messages: Sequence[Message], *, max_tokens: int,
             params: Mapping[str, Any]) -> Completion:
        out, wall, perf = self._timed(
            self._llm.create_chat_completion, messages=[dict(m) for m in messages],
            max_tokens=max_tokens, **params,
        )
        return self._completion(out, wall, perf, out["choices"][0]["message"]["content"] or "")

    def batch(self, op: str, request: Mapping[str, Any],
              seeds: Sequence[int]) -> BatchResult | None:
        """The sampled answers of one call for each seed, decoded as parallel sequences over
        one prompt evaluation (see batched.py); each is the answer ``complete``/``chat`` give
        with that seed. None when the request is not one that reproduces exactly: the caller
        then makes the calls one after another. Not part of ``LoadedModel``: callers look it
        up with ``getattr(loaded, "batch", None)``.

        Exactness was measured on one CPU; another's kernels may round otherwise. So the
        model's first batch is checked: its first and last sequences against the same calls
        made alone. On a difference it is decoded again one token per decode, and if that
        differs too this model stops batching; ``batch_check`` says what happened.
        """
        from .batched import BatchContext, decode_repeats

        if self._batch_off:
            return None
        if self._batch_context is None:
            self._batch_context = BatchContext()
        result = decode_repeats(self._llm, op, request, seeds, context=self._batch_context)
        if result is None or self.batch_check is not None:
            return result
        differs = self._differs(op, request, seeds, result)
        if differs is None:
            self.batch_check = f"verified: sequences 1 and {len(seeds)} equal their single calls"
            return replace(result, check=self.batch_check)
        if self._batch_context.group != 1 or self._batch_context.unified:
            self._batch_context.close()
            self._batch_context = BatchContext(group=1)
            retry = decode_repeats(self._llm, op, request, seeds, context=self._batch_context)
            if retry is not None and self._differs(op, request, seeds, retry) is None:
                self.batch_check = f"{differs}; one token per decode is exact: used from now on"
                return replace(retry, check=self.batch_check)
        self._batch_off = True
        self.batch_check = f"{differs}; batching is off for this model: repeats are made one by one"
        return None

    def _differs(self, op: str, request: Mapping[str, Any], seeds: Sequence[int],
                 result: BatchResult) -> str | None:
        """How the batch's first or last answer differs from the same call made alone, if it does."""
        for i in sorted({0, len(seeds) - 1}):
            alone = call_with(self, op, {**request, "params": {**request["params"], "seed": seeds[i]}})
            got = result.completions[i]
            if (got.text, got.tokens) != (alone.text, alone.tokens):
                return f"the batched answer for seed {seeds[i]} differed from the single call"
        return None

    def close(self) -> None:
        if self._batch_context is not None:  # its llama_context before the model it uses
            self._batch_context.close()
            self._batch_context = None
        self._llm.close()


class LlamaCppBackend:
    """The default backend: ``llama_cpp.Llama(model_path=..., verbose=False, **llama)``."""

    def load(self, variant: Variant, *, llama_kwargs: Mapping[str, Any]) -> LoadedModel:
        from llama_cpp import Llama  # heavy: imported only when a model is really needed

        llm = Llama(model_path=str(variant.path), verbose=False, **dict(llama_kwargs))
        return LlamaCppModel(llm)
