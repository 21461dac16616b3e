"""The model pool: at most one variant resident, each loaded once, every cost measured."""

from __future__ import annotations

import ctypes
import gc
import time
from typing import Any
from collections.abc import Callable, Mapping

import psutil

from .backend import Completion, LoadError, LoadedModel, ModelCrashed
from .cache import ResultCache
from .constants import PROBE_MAX_TOKENS, PROBE_PROMPT
from .measure import CallTotals, Probe, VariantStats
from .model import CallCache, QuantModel
from .variants import Variant

LoadFn = Callable[[Variant], LoadedModel]
ContextFn = Callable[[Variant], dict[str, Any]]


def _settle_memory() -> None:
    """Collect garbage and hand freed heap back to the OS before a baseline is taken.

    glibc keeps freed chunks below its (growing) mmap threshold in the heap, so after large
    numpy or llama.cpp buffers are freed the RSS stays high and the next variant would look
    smaller than it is. ``malloc_trim(0)`` returns those pages; elsewhere it is a no-op.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_LOADED_MODEL = ("llm", "crashed", "memory_bytes", "complete", "chat", "close")


class ModelPool:
    def __init__(self, load: LoadFn, generation: Mapping[str, Any], seed: int | None,
                 prepare: Callable[[], None] | None = None, n_ctx: int | None = None,
                 cache: ResultCache | None = None, cache_context: ContextFn | None = None) -> None:
        self._load = load
        self._cache = cache  # the exact result cache, None when off
        self._cache_context = cache_context  # what besides the request keys a variant's answers
        self._prepare = prepare  # e.g. import llama_cpp, so its libraries are not billed to a variant
        self._generation = generation
        self._seed = seed
        self._n_ctx = n_ctx  # so the model can refuse a max_tokens the context cannot hold
        self.probe_repeats = 0  # set by the session when a speed gate needs calibrated figures
        self.progress: Callable[[str, bool], None] | None = None  # (text, line done): a load's news
        self._proc = psutil.Process()
        self._model: QuantModel | None = None  # the current variant's model, loaded or not yet
        self._loaded: LoadedModel | None = None  # its placement, once loaded
        self._failed: dict[str, str] = {}
        self.stats: dict[str, VariantStats] = {}
        self.current_test: str | None = None  # nodeid the calls are attributed to
        self.test_totals: dict[str, CallTotals] = {}
        self.test_tokens: dict[str, list[tuple[int, ...]]] = {}  # nodeid -> each call's tokens
        self.test_prompts: dict[str, list[tuple[int, ...]]] = {}  # nodeid -> each call's prompt
        self.test_calls: dict[str, list[dict[str, Any]]] = {}  # nodeid -> each call's transcript

    def load_failure(self, name: str) -> str | None:
        """Why ``name`` could not be loaded (or died), if it could not."""
        return self._failed.get(name)

    @property
    def resident(self) -> str | None:
        """The variant whose model is loaded right now, if any."""
        return self._model.variant.name if self._model is not None and self._loaded is not None else None

    def get(self, variant: Variant, *, lazy: bool = False) -> QuantModel:
        """The variant's ``QuantModel``, loaded now, or with ``lazy`` on its first uncached call
        (a variant whose every call hits the result cache is never loaded)."""
        if self._model is None or self._model.variant.name != variant.name:
            self.release()
            if variant.name in self._failed:
                raise LoadError(self._failed[variant.name])
            cache = None
            if self._cache is not None and self._cache_context is not None:
                cache = CallCache(self._cache, self._cache_context(variant),
                                  lambda c: self._cached(variant.name, c))
            self.stats.setdefault(variant.name, VariantStats(variant.name))
            self._model = QuantModel(
                variant, lambda: self.acquire(variant), self._generation, self._seed,
                lambda loaded, call, bill=True: self._measured(variant.name, loaded, call, bill=bill),
                n_ctx=self._n_ctx, cache=cache, transcript=self._transcript,
                on_shared=lambda c, _: self._reused(variant.name, c),
                on_batch=lambda result: self._batched(variant.name, result))
        if not lazy:
            self.acquire(variant)
        return self._model

    def acquire(self, variant: Variant) -> LoadedModel:
        """The current variant's loaded model, loading it now if needed (raises LoadError)."""
        if self._loaded is not None:
            crashed = self._loaded.crashed
            if crashed:  # an isolated worker died: the variant's remaining tests error at once
                self._failed[variant.name] = crashed
                self.release()
                raise LoadError(crashed)
            return self._loaded
        if variant.name in self._failed:
            raise LoadError(self._failed[variant.name])
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            prepare()
        stats = self.stats.setdefault(variant.name, VariantStats(variant.name))
        _settle_memory()  # so the baseline does not include what the previous variant freed
        stats.rss_before = self._proc.memory_info().rss
        self._say(f"quantgate: loading {variant.name} ({variant.path.name}, {variant.size_mb:.1f} MB) ... ")
        t0 = time.perf_counter()
        try:
            loaded = self._load(variant)
        except BaseException as exc:  # the backend's own message, once, for every test of the variant
            self._say("not loaded", done=True)
            if not isinstance(exc, Exception):
                raise  # a skip from a load hook, Ctrl-C
            msg = f"could not load {variant.name} ({variant.path.name}): {type(exc).__name__}: {exc}"
            self._failed[variant.name] = msg
            raise LoadError(msg) from exc
        missing = [a for a in _LOADED_MODEL if not hasattr(loaded, a)]
        if missing:
            msg = (f"could not load {variant.name}: pytest_quantgate_load_model returned "
                   f"{type(loaded).__name__}, which lacks {', '.join(missing)} (see LoadedModel)")
            self._failed[variant.name] = msg
            raise LoadError(msg)
        stats.loads += 1
        stats.load_seconds = time.perf_counter() - t0
        self._loaded = loaded
        if loaded.memory_bytes is not None:  # out of process: the placement measures itself
            stats.rss_before = 0
            stats.rss_after_load = stats.rss_peak = int(loaded.memory_bytes)
            stats.model_bytes = int(loaded.memory_bytes)
        else:
            stats.rss_after_load = stats.rss_peak = self._proc.memory_info().rss
            stats.model_bytes = stats.model_level = max(0, stats.rss_after_load - stats.rss_before)
            stats.last_rss = stats.rss_after_load
        if self.probe_repeats:
            self._say(f"{stats.load_seconds:.2f} s; speed probe ... ")
            try:
                stats.probe = self._probe(variant.name, loaded)
            except ModelCrashed as exc:
                self._say("crashed", done=True)
                self._failed[variant.name] = str(exc)
                self.release()
                raise LoadError(str(exc)) from None
            speed = stats.probe.tokens_per_second
            self._say(f"{speed.median:.1f} tok/s" if speed else "done", done=True)
        else:
            self._say(f"{stats.load_seconds:.2f} s", done=True)
        return loaded

    def _say(self, text: str, done: bool = False) -> None:
        if self.progress is not None:
            self.progress(text, done)

    def _probe(self, name: str, loaded: LoadedModel) -> Probe:
        """The speed probe: one warm-up, then ``probe_repeats`` timed runs of a fixed workload.

        It runs right after the load, before any test's call, whatever the tests do, so every
        variant is timed on the same work in the same state. Its calls count towards memory
        (they are the model's) but not towards any test's or group's call totals.
        """
        params = {k: v for k, v in self._generation.items() if k != "max_tokens"}
        params["temperature"] = 0.0
        if self._seed is not None:
            params["seed"] = self._seed
        calls = [self._measured(name, loaded, lambda: loaded.complete(
            PROBE_PROMPT, max_tokens=PROBE_MAX_TOKENS, stop=None, params=params), record=False)
            for _ in range(self.probe_repeats + 1)]
        return Probe.of(calls[1:])

    def _transcript(self, entry: dict[str, Any]) -> None:
        if self.current_test is not None:
            self.test_calls.setdefault(self.current_test, []).append(entry)

    def _cached(self, name: str, c: Completion | None) -> None:
        """A call the result cache answered: its tokens serve fidelity like a live call's, but
        it adds no timing or memory (nothing ran); the summary counts it."""
        self.stats[name].cached_calls += 1
        if c is not None:
            self._keep_tokens(c)

    def _reused(self, name: str, c: Completion) -> None:
        """A repeat answered by its case's batch, or by a greedy call made once: its tokens
        serve fidelity like a live call's; its cost was billed to the decode that made it."""
        self.stats[name].reused_calls += 1
        self._keep_tokens(c)

    def _batched(self, name: str, result: Any) -> None:
        stats = self.stats[name]
        stats.batches += 1
        stats.batch_sequences += int(result.sequences)
        stats.batch_tokens += int(result.generated_tokens)
        stats.batch_seconds += float(result.wall_seconds)
        check = getattr(result, "check", None)
        if isinstance(check, str):
            stats.batch_check = check

    def _keep_tokens(self, c: Completion) -> None:
        """The call's tokens and prompt, for the test that made it (fidelity scores them)."""
        if self.current_test is not None and c.tokens:
            self.test_tokens.setdefault(self.current_test, []).append(c.tokens)
            self.test_prompts.setdefault(self.current_test, []).append(c.tokens[:c.prompt_tokens])

    def _measured(self, name: str, loaded: Any, call: Callable[[], Any], record: bool = True,
                  bill: bool = True) -> Any:
        """Make one call and bill the model only for what it adds *during* its calls.

        The model's level starts at what its load added. Growth across a call is the model's;
        growth between calls is the test's own code (a lazily loaded dataset, a cache) and is
        left out, so a variant's figure does not depend on which variant ran first. Shrinking
        between calls (freed call garbage, glibc trimming its heap) lowers the level, so
        memory that every call borrows and gives back is counted once, not once per call.
        The figure is the level's high-water mark. A batched decode of repeats is not billed
        (``bill=False``): its extra KV streams are the harness's; the product decodes one
        sequence at a time.
        """
        before = self._proc.memory_info().rss
        c = call()
        after = self._proc.memory_info().rss
        stats = self.stats[name]
        if loaded.memory_bytes is not None:  # the placement's own peak, nothing else in it
            stats.model_bytes = max(stats.model_bytes or 0, int(loaded.memory_bytes))
            rss = int(loaded.memory_bytes)
        else:
            gap = before - (stats.last_rss if stats.last_rss is not None else before)
            level = max(0, (stats.model_level or 0) + min(0, gap) + (after - before if bill else 0))
            stats.model_level, stats.last_rss = level, after
            stats.model_bytes = max(stats.model_bytes or 0, level)
            rss = after
        if stats.rss_peak is None or rss > stats.rss_peak:
            stats.rss_peak = rss
        if not record or not isinstance(c, Completion):  # a probe or scoring call: memory only
            return c
        stats.totals.add(c)
        if self.current_test is not None:
            self.test_totals.setdefault(self.current_test, CallTotals()).add(c)
        self._keep_tokens(c)
        return c

    def release(self) -> None:
        """Close the resident model (``Llama.close()``) so the next variant loads alone."""
        self._model = None
        if self._loaded is not None:
            loaded, self._loaded = self._loaded, None
            loaded.close()
            _settle_memory()
