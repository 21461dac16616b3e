"""What one model call returns (``Completion``) and how stop strings are read. A leaf: the
backends, the batched decode and the result cache all build or read these."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence


def stop_list(stop: str | Sequence[str] | None) -> list[str] | None:
    """``stop="Q:"`` is one stop string, not the characters ``Q`` and ``:``."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    return [s for s in stop if s] or None


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int  # tokens in the prompt (as tokenized, chat template included)
    completion_tokens: int  # tokens generated
    wall_seconds: float  # the call as the application sees it
    prompt_eval_tokens: int  # llama.cpp counters (llama_perf_context) for this call
    prompt_eval_ms: float
    eval_tokens: int
    eval_ms: float
    finish_reason: str | None = None
    tokens: tuple[int, ...] = ()  # every token the call evaluated (prompt + reply), if known
    cached: bool = False  # served by the result cache: its timings are from the run that made it
    prompt_text: str = ""  # the prompt as the model saw it (chat template applied), if known
