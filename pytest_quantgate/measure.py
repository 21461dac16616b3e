"""Running totals of what the calls cost. Plain data that travels on reports as dicts."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any
from collections.abc import Callable

from .backend import Completion
from .constants import MB


@dataclass
class CallTotals:
    """Sums over a set of calls (one test's, one group's or one variant's)."""

    calls: int = 0
    gen_tokens: int = 0  # completion tokens (usage), what the application received
    gen_seconds: float = 0.0  # wall time of the calls
    prompt_tokens: int = 0
    prompt_eval_tokens: int = 0  # llama.cpp counters
    prompt_eval_ms: float = 0.0
    eval_tokens: int = 0
    eval_ms: float = 0.0

    def add(self, c: Completion) -> None:
        self.calls += 1
        self.gen_tokens += c.completion_tokens
        self.gen_seconds += c.wall_seconds
        self.prompt_tokens += c.prompt_tokens
        self.prompt_eval_tokens += c.prompt_eval_tokens
        self.prompt_eval_ms += c.prompt_eval_ms
        self.eval_tokens += c.eval_tokens
        self.eval_ms += c.eval_ms

    def merge(self, other: CallTotals) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tokens_per_second(self) -> float | None:
        """End to end: generated tokens over the wall time of the calls."""
        return self.gen_tokens / self.gen_seconds if self.gen_seconds > 0 else None

    @property
    def decode_tokens_per_second(self) -> float | None:
        """llama.cpp's own decode speed: kernels only, no Python or sampling overhead."""
        return self.eval_tokens / (self.eval_ms / 1000) if self.eval_ms > 0 else None

    @property
    def prompt_tokens_per_second(self) -> float | None:
        return self.prompt_eval_tokens / (self.prompt_eval_ms / 1000) if self.prompt_eval_ms > 0 else None


@dataclass(frozen=True)
class Spread:
    """One figure over R repetitions: gates use the median; a threshold inside min..max cannot
    be decided on this machine right now."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None

    @property
    def relative(self) -> float:
        """(max - min) / median: the run-to-run noise the probe saw."""
        return (self.max - self.min) / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "spread": self.relative}


@dataclass(frozen=True)
class Probe:
    """The speed probe of one variant: R timed repetitions of a fixed workload after a warm-up."""

    repeats: int
    tokens_per_second: Spread | None  # end to end: generated tokens / wall time
    decode_tokens_per_second: Spread | None  # llama.cpp's eval counters
    prompt_tokens_per_second: Spread | None  # llama.cpp's prompt-eval counters

    @classmethod
    def of(cls, calls: list[Completion]) -> Probe:
        singles = []
        for c in calls:  # each call's rates, by the same arithmetic as any other call totals
            t = CallTotals()
            t.add(c)
            singles.append(t)

        def rates(rate: Callable[[CallTotals], float | None]) -> Spread | None:
            return Spread.of([r for r in map(rate, singles) if r is not None])

        return cls(
            repeats=len(calls),
            tokens_per_second=rates(lambda t: t.tokens_per_second),
            decode_tokens_per_second=rates(lambda t: t.decode_tokens_per_second),
            prompt_tokens_per_second=rates(lambda t: t.prompt_tokens_per_second),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"repeats": self.repeats,
                **{k: (None if s is None else s.to_dict()) for k, s in (
                    ("tokens_per_second", self.tokens_per_second),
                    ("decode_tokens_per_second", self.decode_tokens_per_second),
                    ("prompt_tokens_per_second", self.prompt_tokens_per_second))}}


@dataclass
class VariantStats:
    """Everything measured about one variant in this process."""

    name: str
    loads: int = 0
    load_seconds: float | None = None
    rss_before: int | None = None  # process RSS just before the load
    rss_after_load: int | None = None
    rss_peak: int | None = None  # highest RSS seen after load and after each call
    model_bytes: int | None = None  # high-water mark of the model's level (ModelPool._measured)
    model_level: int | None = None  # what the load and the calls added, net, so far
    last_rss: int | None = None  # RSS after the latest call: the next call sees what ran between
    totals: CallTotals = field(default_factory=CallTotals)
    cached_calls: int = 0  # calls the result cache answered (not in totals: nothing was timed)
    # repeats (not in totals either: batched speed is not what one user of the product sees)
    batches: int = 0  # decodes of a call's repeats as parallel sequences
    batch_sequences: int = 0
    batch_tokens: int = 0  # tokens generated over all sequences
    batch_seconds: float = 0.0
    reused_calls: int = 0  # repeats answered by a batch or by a greedy call made once
    batch_check: str | None = None  # the first batch checked against single calls (backend's words)
    probe: Probe | None = None  # the calibrated speed figures, when a speed gate asked for them

    @property
    def memory_mb(self) -> float | None:
        """RSS the variant added: its load, then growth across its calls, net of what they give
        back (see ``ModelPool._measured``).

        Taken after calls, so mmap'd weight pages that a forward pass touched are counted;
        what test code allocates between calls is not.
        """
        return None if self.model_bytes is None else self.model_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        probe = self.probe
        return {
            "name": self.name,
            "loads": self.loads,
            "load_seconds": self.load_seconds,
            "memory_mb": self.memory_mb,
            "rss_before": self.rss_before,
            "rss_after_load": self.rss_after_load,
            "rss_peak": self.rss_peak,
            "calls": self.totals.to_dict(),
            "cached_calls": self.cached_calls,
            "reused_calls": self.reused_calls,
            # batched throughput, all sequences together: reported as such, never as speed
            "batched": {"batches": self.batches, "sequences": self.batch_sequences,
                        "tokens": self.batch_tokens, "seconds": round(self.batch_seconds, 4),
                        "tokens_per_second": (self.batch_tokens / self.batch_seconds
                                              if self.batch_seconds > 0 else None),
                        "check": self.batch_check} if self.batches else None,
            # the probe's medians when it ran, else the single pass over the calls
            "tokens_per_second": _median_or(probe.tokens_per_second if probe else None,
                                            self.totals.tokens_per_second),
            "decode_tokens_per_second": _median_or(probe.decode_tokens_per_second if probe else None,
                                                   self.totals.decode_tokens_per_second),
            "prompt_tokens_per_second": _median_or(probe.prompt_tokens_per_second if probe else None,
                                                   self.totals.prompt_tokens_per_second),
            "probe": self.probe.to_dict() if self.probe else None,
        }


def _median_or(spread: Spread | None, fallback: float | None) -> float | None:
    return spread.median if spread is not None else fallback
