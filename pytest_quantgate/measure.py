"""Running totals of what the calls cost. Plain data that travels on reports as dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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

    @property
    def memory_mb(self) -> float | None:
        """RSS the variant added: its load, then growth across its calls, net of what they give
        back (see ``ModelPool._measured``).

        Taken after calls, so mmap'd weight pages that a forward pass touched are counted;
        what test code allocates between calls is not.
        """
        return None if self.model_bytes is None else self.model_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "loads": self.loads,
            "load_seconds": self.load_seconds,
            "memory_mb": self.memory_mb,
            "rss_before": self.rss_before,
            "rss_after_load": self.rss_after_load,
            "rss_peak": self.rss_peak,
            "calls": self.totals.to_dict(),
            "tokens_per_second": self.totals.tokens_per_second,
            "decode_tokens_per_second": self.totals.decode_tokens_per_second,
            "prompt_tokens_per_second": self.totals.prompt_tokens_per_second,
        }
