"""Out-of-process placement: one child process per variant owns the ``llama_cpp.Llama``.

The test process talks to it over a ``multiprocessing`` pipe. A native crash (segfault,
abort) kills only the child; the parent sees the pipe close, reads the exit signal and
raises ``ModelCrashed`` for that variant while the session goes on. The child also measures
its own memory, so the figure is exactly what the model costs, with no Python test state in it.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Mapping, Sequence

from .backend import Completion, Message, ModelCrashed, stop_list
from .variants import Variant

if TYPE_CHECKING:
    from .batched import BatchResult


def serve(conn: Any, model_path: str, llama_kwargs: dict[str, Any]) -> None:
    """Child main loop: load, then answer ``(op, kwargs)`` requests until ``close``."""
    import psutil

    import llama_cpp  # before the baseline, so the library's own pages are not billed

    from .backend import LlamaCppModel

    proc = psutil.Process()
    base = proc.memory_info().rss
    try:
        model = LlamaCppModel(llama_cpp.Llama(model_path=model_path, verbose=False, **llama_kwargs))
    except Exception as exc:  # reported to the parent, which fails the variant's tests
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    peak = proc.memory_info().rss
    harness = 0  # growth across batched decodes of repeats: the test harness's, not the model's
    conn.send(("ok", {"memory_bytes": peak - base}))
    while True:
        try:
            op, kwargs = conn.recv()
        except EOFError:
            break
        if op == "close":
            model.close()
            conn.send(("ok", None))
            break
        before = proc.memory_info().rss
        try:
            if op == "batch":
                result = model.batch(**kwargs)
                answer: dict[str, Any] = {"batch": None if result is None else asdict(result)}
            else:
                completion = model.complete(**kwargs) if op == "complete" else model.chat(**kwargs)
                answer = {"completion": asdict(completion)}
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        rss = proc.memory_info().rss
        if op == "batch":  # its own KV streams: the product decodes one sequence at a time
            harness += max(0, rss - before)
        peak = max(peak, rss - harness)
        conn.send(("ok", {**answer, "memory_bytes": peak - base}))


def _completion(data: Mapping[str, Any]) -> Completion:
    """A Completion rebuilt from its asdict form; tokens as a tuple whatever carried it."""
    fields = dict(data)
    fields["tokens"] = tuple(fields.get("tokens", ()))
    return Completion(**fields)


class WorkerModel:
    """``LoadedModel`` whose model lives in a child process; ``llm`` is None."""

    def __init__(self, variant: Variant, llama_kwargs: Mapping[str, Any],
                 target: Callable[..., None] = serve, timeout: float = 600.0) -> None:
        self.variant = variant
        self._timeout = timeout  # per request: a stopped or wedged worker must not hang the run
        self._llama = dict(llama_kwargs)
        self._loading = True
        ctx = mp.get_context("spawn")  # fork would copy a threaded process: unsafe with OpenMP
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(child, str(variant.path), dict(llama_kwargs)),
                                 name=f"quantgate-{variant.name}", daemon=True)
        self._proc.start()
        child.close()
        self.memory_bytes: int | None = 0  # the worker's own peak RSS growth, nothing else in it
        self.crashed: str | None = None  # the crash message once the worker has died
        info = self._receive()
        self._loading = False
        self.memory_bytes = int(info["memory_bytes"])

    @property
    def llm(self) -> Any:
        return None

    def _receive(self) -> Any:
        try:
            answered = self._conn.poll(self._timeout)
        except (EOFError, ConnectionError, OSError):
            answered = True  # the pipe is closed: recv below reports the death
        if not answered:
            self._proc.kill()
            self._proc.join(timeout=10)
            doing = "loading" if self._loading else "a call on"
            self.crashed = (f"the worker {doing} {self.variant.name} did not answer within "
                            f"{self._timeout:g} s (call_timeout in quantgate.yaml); it was killed")
            raise ModelCrashed(self.crashed)
        try:
            status, payload = self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            self._proc.join(timeout=10)
            raise ModelCrashed(self._death()) from None
        if status == "error":
            raise RuntimeError(payload)
        return payload

    def _death(self) -> str:
        code = self._proc.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "unknown"
            how = f"signal {-code}, {name}"
        else:
            how = f"exit code {code}"
        if self._loading:  # most likely a llama: setting llama.cpp rejects by aborting
            settings = ", ".join(f"{k}={v!r}" for k, v in sorted(self._llama.items()))
            self.crashed = (f"llama.cpp crashed while loading {self.variant.name} ({how}) with "
                            f"llama: {settings}")
        else:
            self.crashed = f"llama.cpp crashed while running {self.variant.name} ({how})"
        return self.crashed

    def _request(self, op: str, kwargs: dict[str, Any]) -> Any:
        try:
            self._conn.send((op, kwargs))
        except (BrokenPipeError, ConnectionError, OSError):
            self._proc.join(timeout=10)
            raise ModelCrashed(self._death()) from None
        payload = self._receive()
        self.memory_bytes = int(payload["memory_bytes"])
        return payload

    def _call(self, op: str, **kwargs: Any) -> Completion:
        return _completion(self._request(op, kwargs)["completion"])

    def batch(self, op: str, request: Mapping[str, Any],
              seeds: Sequence[int]) -> BatchResult | None:
        """``LlamaCppModel.batch`` in the worker: R seeds' answers over one prompt
        evaluation, or None (make the calls one by one)."""
        from .batched import BatchResult

        req = dict(request)
        if "messages" in req:
            req["messages"] = [dict(m) for m in req["messages"]]
        req["params"] = dict(req.get("params") or {})
        data = self._request("batch", {"op": op, "request": req,
                                       "seeds": [int(s) for s in seeds]})["batch"]
        if data is None:
            return None
        return BatchResult(**{**data, "completions": [_completion(c) for c in data["completions"]]})

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str] | None,
                 params: Mapping[str, Any]) -> Completion:
        return self._call("complete", prompt=prompt, max_tokens=max_tokens,
                          stop=stop_list(stop), params=dict(params))

    def chat(self, messages: Sequence[Message], *, max_tokens: int,
             params: Mapping[str, Any]) -> Completion:
        return self._call("chat", messages=[dict(m) for m in messages], max_tokens=max_tokens,
                          params=dict(params))

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close", {}))
                self._conn.recv()
            except (EOFError, BrokenPipeError, ConnectionError, OSError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()


class WorkerBackend:
    def __init__(self, target: Callable[..., None] = serve, timeout: float = 600.0) -> None:
        self._target = target
        self._timeout = timeout

    def load(self, variant: Variant, *, llama_kwargs: Mapping[str, Any]) -> WorkerModel:
        return WorkerModel(variant, llama_kwargs, self._target, self._timeout)
