"""R sampled repeats of one call, decoded as R parallel sequences in one llama.cpp context.

A sampled case repeated R times (seeds s, s+1, ..., s+R-1) reads the same prompt R times when
the calls are made one after another. Here the prompt is evaluated once (sequence 0), its KV
cells are shared with sequences 1..R-1 (``llama_memory_seq_cp``), and every step is one
``llama_decode`` holding one token per still-active sequence, each sequence sampling with its
own sampler chain and seed. A tiny model on a CPU is bound by reading its weights, not by
arithmetic, so R tokens per decode cost little more than one.

Exactness is the point: a repeat's answer must be the one ``Llama.create_completion(...,
seed=s+r)`` gives alone. Nothing llama-cpp-python decides is re-implemented where it can be
reused instead. A ``_Proxy`` stands in for the ``Llama`` and runs the library's own code
(``create_chat_completion`` -> chat handler -> ``create_completion`` -> ``_create_completion``)
with ``generate`` replaced: once before decoding, yielding nothing, to learn the prompt
tokens, the stop strings and the sampler settings exactly as the sequential call would use
them; once per sequence after decoding, replaying that sequence's sampled tokens, so its text,
finish_reason and usage come from the library itself. The sampler chains are built by the
library's own ``Llama._init_sampler``. Only the decision of when a sequence stops (EOG, stop
string, max_tokens, the partial UTF-8 hold-back) is mirrored here, step by step, from
``_create_completion``; the replay checks it consumed exactly the tokens we sampled.

Anything not reproduced exactly (grammar, logit_bias, logprobs, mirostat, custom processors
or stopping criteria, greedy decoding, a result cache, a draft model, recurrent memory, a
request too big for the KV budget) makes ``decode_repeats`` return None: the caller then
makes the calls one after another.

Numerics: the logits of the first reply token come from the same prompt evaluation (same
n_batch chunks, same n_ubatch, threads and cache types) as the sequential call, so the first
sampled token is always the sequential one. Later steps run R rows through the matmuls and
attend over a cache laid out differently from a lone sequence's, so llama.cpp's float sums
may round differently; ``tests/test_batched.py`` measures how often that changes a token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

from .completion import Completion, stop_list

# llama-cpp-python's own sampler/decoding defaults are read from its signatures through the
# proxy; these are only the generation keywords whose effect we reproduce exactly.
_SAMPLING_KEYS = frozenset({
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
    "presence_penalty", "frequency_penalty", "seed",
    "tfs_z",  # accepted and ignored by llama-cpp-python's sampler chain: ignoring it is exact
    "mirostat_mode", "mirostat_tau", "mirostat_eta",  # only mirostat_mode 0 (tau/eta unused)
})
_CHAT_KEYS = _SAMPLING_KEYS | {"stop"}  # chat takes its stop strings among the params

# Llama.generate's keyword arguments that it forwards to Llama._init_sampler
_INIT_SAMPLER_KEYS = frozenset({
    "top_k", "top_p", "min_p", "typical_p", "temp", "repeat_penalty", "frequency_penalty",
    "presence_penalty", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta", "penalize_nl",
    "logits_processor", "grammar",
})

# Cells reserved per sequence beyond max_tokens: llama-cpp-python skips its max_tokens check
# while a multi-byte UTF-8 character is incomplete, so a reply can run a few tokens long.
_SLACK = 4
# llama.cpp pads the KV cache it attends over to 32 cells (256 with flash attention) and a
# context's n_ctx to 256: a stream sized in these steps is attended over exactly as the
# sequential context's first cells are
_PAD_CELLS = 32
_PAD_CTX = 256
# Tokens per llama_decode in a generation step. llama.cpp's CPU "repack" kernels (Q4_K, Q2_K,
# IQ4_NL... on AVX2/NEON) multiply 4 columns at a time with a gemm and the rest with the gemv
# a lone token uses; the two round differently. Up to 3 tokens per decode all go through the
# gemv, so every sequence's logits are bit for bit those of its sequential call (measured on
# Q4_K_M and Q2_K). Float and Q8_0/Q4_0 weights take llamafile's sgemm for more than one
# column (F16 measured: 1 answer in 24 drifts with 3 per decode), so those decode one token
# per call: the batch then saves only the prompt and the Python between calls.
EXACT_GROUP = 3
_ONE_BY_ONE_FTYPES = frozenset({0, 1, 2, 7, 32})  # general.file_type: F32, F16, Q4_0, Q8_0, BF16


def exact_group(llm: Any) -> int:
    """The most tokens per decode that keeps every answer identical to the sequential one."""
    ftype = str(getattr(llm, "metadata", {}).get("general.file_type", ""))
    return 1 if not ftype.isdigit() or int(ftype) in _ONE_BY_ONE_FTYPES else EXACT_GROUP
_DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed for it


@dataclass(frozen=True)
class BatchResult:
    completions: list[Completion]  # one per seed, in the order of the seeds
    wall_seconds: float  # the whole batch, prompt evaluation and replays included
    prompt_tokens: int  # evaluated once, shared by every sequence
    generated_tokens: int  # sum of the sequences' completion_tokens
    sequences: int
    check: str | None = None  # the backend's check of its first batch against single calls


class _Exhausted(Exception):
    """The replay asked for more tokens than the sequence sampled: our stop rule disagreed."""


class _Unsupported(Exception):
    """The request uses something decode_repeats does not reproduce exactly."""


class _Proxy:
    """Looks like the ``Llama`` to llama-cpp-python's own completion code, except that
    ``generate`` is ours: it records the prompt tokens and sampler settings and yields a
    fixed list of tokens. Every other attribute is the real model's, so tokenization, chat
    templates, stop lists and detokenization are exactly the sequential call's.

    ``evaluated`` is what the sequential Llama has evaluated after the prompt when the reply
    ends (``_input_ids`` is read by a stopping criterion after the loop); ``strict`` raises
    _Exhausted when the library asks for more than ``reply``, else the generator just ends
    (as ``generate`` does when a stopping criterion fires)."""

    def __init__(self, llm: Any, reply: Sequence[int] = (), evaluated: Sequence[int] = (),
                 strict: bool = False) -> None:
        import numpy as np

        cls = type(llm)
        self._llm = llm
        self._seed: int = int(llm._seed)
        self._reply = list(reply)
        self._evaluated = list(evaluated)
        self._strict = strict
        self._input_ids = np.zeros(0, dtype=np.intc)
        # the logits a stopping criterion is shown: only criteria known to ignore them are
        # accepted (see _criterion), so a placeholder row is exact
        self._scores = np.zeros((1, 1), dtype=np.single)
        self.consumed = 0
        self.prompt: list[int] | None = None
        self.sampling: dict[str, Any] = {}
        self.completion_kwargs: dict[str, Any] = {}
        self.completion_calls = 0
        # the library's methods, bound to the proxy so that their ``self.`` lookups land here
        self.create_completion = cls.create_completion.__get__(self)
        self._real_create_completion = cls._create_completion.__get__(self)
        self._init_sampler = cls._init_sampler.__get__(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def _create_completion(self, *args: Any, **kwargs: Any) -> Any:
        self.completion_calls += 1
        self.completion_kwargs = dict(kwargs)
        return self._real_create_completion(*args, **kwargs)

    def set_seed(self, seed: int) -> None:
        self._seed = seed  # never touches the real Llama's seed

    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[int]:
        import numpy as np

        self.prompt = [int(t) for t in tokens]
        self.sampling = dict(kwargs)
        self._input_ids = np.array(self.prompt + self._evaluated, dtype=np.intc)
        return self._yield()

    def _yield(self) -> Iterator[int]:
        for token in self._reply:
            self.consumed += 1
            yield token
        if self._strict:
            raise _Exhausted


@dataclass
class _Plan:
    """What the sequential call would do, as learnt by the probe."""

    prompt: list[int]
    stops: list[bytes]
    max_tokens: int
    sampling: dict[str, Any]  # Llama.generate's keyword arguments (sampler settings)
    criterion: Any  # the chat template's stopping criterion, or None


# The one stopping criterion llama-cpp-python adds by itself: a Jinja chat template's
# "last evaluated token is a stop token" (Jinja2ChatFormatter, stop_token_ids=[eos]). It reads
# only the token ids, so calling it on the sequence's own ids decides exactly as it would.
_KNOWN_CRITERION = ("llama_cpp.llama_chat_format",
                    "Jinja2ChatFormatter.__call__.<locals>.stop_on_last_token")


def _criterion(criteria: Any) -> Any:
    if criteria is None:
        return None
    if all((getattr(c, "__module__", None), getattr(c, "__qualname__", None)) == _KNOWN_CRITERION
           for c in criteria):
        return criteria
    raise _Unsupported("custom stopping criteria")


def _probe(llm: Any, op: str, request: Mapping[str, Any], seed: int, reply: Sequence[int] = (),
           evaluated: Sequence[int] = (), strict: bool = False) -> tuple[_Proxy, dict[str, Any]]:
    """Run the sequential call's library code on a proxy; ``reply`` is what it samples."""
    proxy = _Proxy(llm, reply, evaluated, strict)
    params = {k: v for k, v in dict(request.get("params") or {}).items() if k != "seed"}
    out: dict[str, Any]
    if op == "complete":
        out = type(llm).create_completion(
            proxy, prompt=request["prompt"], max_tokens=request["max_tokens"],
            stop=stop_list(request.get("stop")), seed=seed, **params)
    else:
        out = type(llm).create_chat_completion(
            proxy, messages=[dict(m) for m in request["messages"]],
            max_tokens=request["max_tokens"], seed=seed, **params)
    return proxy, out


def _plan(llm: Any, op: str, request: Mapping[str, Any], seed: int) -> _Plan:
    if op not in ("complete", "chat"):
        raise _Unsupported(f"op {op!r}")
    params = dict(request.get("params") or {})
    unknown = set(params) - (_SAMPLING_KEYS if op == "complete" else _CHAT_KEYS)
    if unknown:
        raise _Unsupported(f"params {sorted(unknown)}")
    if op == "complete" and not request["prompt"]:
        raise _Unsupported("an empty prompt (llama-cpp-python seeds the reply with BOS)")
    # state the library would read or write around generation, which a proxy cannot mirror
    if (llm.cache is not None or llm.draft_model is not None or llm._is_recurrent
            or llm._is_hybrid or llm._logits_all):
        raise _Unsupported("a result cache, draft model, recurrent memory or logits_all")
    try:
        proxy, _ = _probe(llm, op, request, seed)
    except Exception as exc:  # the sequential call raises the same: let it, there
        raise _Unsupported(f"{type(exc).__name__}: {exc}") from exc
    kw, sampling = proxy.completion_kwargs, proxy.sampling
    if proxy.completion_calls != 1 or proxy.prompt is None:
        raise _Unsupported("the chat handler does not make exactly one completion")
    if (kw.get("stream") or kw.get("logprobs") is not None or kw.get("suffix") is not None
            or kw.get("echo")):
        raise _Unsupported("stream, logprobs, suffix or echo")
    if any(sampling.get(k) is not None for k in ("logits_processor", "grammar")):
        raise _Unsupported("logit_bias, a grammar or a logits processor")
    criterion = _criterion(sampling.get("stopping_criteria"))
    if sampling.get("mirostat_mode", 0) != 0 or not float(sampling.get("temp", 0.0)) > 0.0:
        raise _Unsupported("mirostat or temperature <= 0")
    prompt = proxy.prompt
    # _create_completion's own max_tokens rule, against the sequential context's size
    n_ctx = int(llm._n_ctx)
    max_tokens = kw.get("max_tokens")
    if max_tokens is None or max_tokens <= 0:
        max_tokens = n_ctx - len(prompt)
    max_tokens = max_tokens if max_tokens + len(prompt) < n_ctx else n_ctx - len(prompt)
    stop = kw.get("stop")
    stops = stop if isinstance(stop, list) else [stop] if isinstance(stop, str) else []
    return _Plan(prompt, [s.encode("utf-8") for s in stops], int(max_tokens), sampling,
                 criterion)


@dataclass
class _Sequence:
    seed: int
    sampler: Any  # llama_cpp._internals.LlamaSampler
    sampled: list[int] = field(default_factory=list)  # every token generate() would yield
    completion: list[int] = field(default_factory=list)  # sampled minus the EOG token
    multibyte_fix: int = 0
    done: bool = False
    criterion_stopped: bool = False  # generate() returned before yielding the last sample

    @property
    def evaluated(self) -> list[int]:
        """The reply tokens the sequential Llama has evaluated when the call returns: every
        yielded token but the one the consumer stopped at, which is never fed back."""
        return list(self.sampled) if self.criterion_stopped else self.sampled[:-1]


def _ends(llm: Any, plan: _Plan, seq: _Sequence, token: int) -> bool:
    """Does the sequential consumer loop stop at ``token``? A copy of the per-token logic of
    ``Llama._create_completion`` (stream=False): same order, same partial-UTF-8 hold-back
    (which also skips the stop and max_tokens checks for that token)."""
    import llama_cpp

    seq.sampled.append(token)
    if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
        return True
    seq.completion.append(token)
    all_text: bytes = llm.detokenize(seq.completion, prev_tokens=plan.prompt)
    for k, char in enumerate(all_text[-3:]):
        k = 3 - k
        for num, pattern in ((2, 192), (3, 224), (4, 240)):
            if num > k and pattern & char == pattern:
                seq.multibyte_fix = num - k
    if seq.multibyte_fix > 0:
        seq.multibyte_fix -= 1
        return False
    if any(s in all_text for s in plan.stops):
        return True
    return len(seq.completion) >= plan.max_tokens


class BatchContext:
    """A second llama_context on the ``Llama``'s model, kept for reuse between batches.

    Created on first use and grown (freed and recreated) when a batch needs more sequences
    or cells; its memory is cleared before each batch. Weights are shared with the ``Llama``
    (same llama_model); only the KV cache and compute buffers are extra. ``close`` frees it;
    llama-cpp-python also frees it before the model if the ``Llama`` is closed first.
    """

    def __init__(self, unified: bool = False, group: int | None = None) -> None:
        # unified=False (the default): one KV stream per sequence, each laid out exactly as a
        # lone call's cache (prompt at cells 0..P-1, its own reply after), so attention sums
        # run in the sequential order. A unified pool (the shared prompt stored once, cells
        # P + R*max_tokens instead of R*(P + max_tokens)) interleaves the sequences' cells,
        # which reorders the float sums of softmax and attention: answers then drift from
        # the sequential ones after a few tokens (measured in tests/test_batched.py).
        self.unified = unified
        # tokens per decode in a step; None: exact_group(llm), the exact choice per weight type
        self.group = group
        self._ctx: Any = None  # llama_cpp._internals.LlamaContext
        self._batch: Any = None  # llama_cpp.llama_batch
        self._llm_id = 0
        self.n_seq_max = 0
        self.n_cells = 0
        self.n_batch_tokens = 0

    def acquire(self, llm: Any, n_seq: int, n_cells: int) -> Any:
        """The raw llama_context, empty, for ``n_seq`` sequences over ``n_cells`` cells."""
        import llama_cpp
        from llama_cpp import _internals

        if self._ctx is None or self._llm_id != id(llm) or self.n_seq_max < n_seq \
                or self.n_cells < n_cells or self._ctx.ctx is None:
            if self._llm_id == id(llm):  # grow to cover every size seen: no re-creation
                n_seq, n_cells = max(n_seq, self.n_seq_max), max(n_cells, self.n_cells)
            self.close()
            base = llm.context_params
            params = type(base).from_buffer_copy(base)  # n_threads, n_batch, n_ubatch, type_k/v,
            # flash_attn, rope and yarn settings exactly as the sequential context has them
            params.n_seq_max = n_seq
            params.kv_unified = self.unified
            # n_cells is the whole pool (unified) or one sequence's stream (not unified)
            params.n_ctx = n_cells if self.unified else n_cells * n_seq
            params.embeddings = False
            params.no_perf = True
            if params.flash_attn_type != llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED and \
                    not self.unified:
                n_cells = -(-n_cells // _PAD_CTX) * _PAD_CTX  # flash attention pads by 256
                params.n_ctx = n_cells * n_seq
            self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
            per_seq = llama_cpp.llama_n_ctx_seq(self._ctx.ctx)
            if per_seq < (n_cells if not self.unified else 1):
                raise _Unsupported(f"llama.cpp gave {per_seq} cells per sequence")
            self.n_batch_tokens = max(int(llm.n_batch), n_seq)
            self._batch = llama_cpp.llama_batch_init(self.n_batch_tokens, 0, 1)
            self._llm_id, self.n_seq_max, self.n_cells = id(llm), n_seq, n_cells
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx.ctx), True)
        return self._ctx.ctx

    @property
    def batch(self) -> Any:
        return self._batch

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        self.n_seq_max = self.n_cells = 0


def _fill(batch: Any, items: Sequence[tuple[int, int, int, bool]]) -> None:
    """``items``: (token, position, sequence, wants logits) per batch row."""
    batch.n_tokens = len(items)
    for i, (token, pos, seq, logits) in enumerate(items):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits


def _cells(plan: _Plan, n_seq: int, unified: bool) -> int:
    """Cells of the pool (unified) or of one sequence's stream (not unified)."""
    need = plan.max_tokens + _SLACK
    if unified:
        return -(-(len(plan.prompt) + n_seq * need) // _PAD_CTX) * _PAD_CTX
    cells = -(-(len(plan.prompt) + need) // _PAD_CELLS) * _PAD_CELLS
    while (cells * n_seq) % _PAD_CTX:  # llama.cpp pads n_ctx to 256, then splits it evenly
        cells += _PAD_CELLS
    return cells


def decode_repeats(llm: Any, op: str, request: Mapping[str, Any], seeds: Sequence[int],
                   *, context: BatchContext | None = None) -> BatchResult | None:
    """The R = len(seeds) sampled answers of one call, decoded together; None when the
    request is not one this reproduces exactly (the caller then makes the calls one by one).

    ``llm`` is a ``llama_cpp.Llama``; ``op`` is "complete" (request: prompt, max_tokens,
    stop, params) or "chat" (request: messages, max_tokens, params); a "seed" in params is
    ignored, the seeds are ``seeds``. ``context`` is reused between calls when given (see
    ``BatchContext``); otherwise a temporary one is made and freed.
    """
    import llama_cpp
    import numpy as np

    seeds = [int(s) for s in seeds]
    if not seeds or any(not 0 <= s < _DEFAULT_SEED for s in seeds):
        return None  # LLAMA_DEFAULT_SEED or a negative one means "random": not reproducible
    t0 = time.perf_counter()
    try:
        plan = _plan(llm, op, request, seeds[0])
    except _Unsupported:
        return None
    owned = context is None
    ctx_holder = context if context is not None else BatchContext()
    n_seq = len(seeds)
    n_cells = _cells(plan, n_seq, ctx_holder.unified)
    # a reply must fit the sequential context (which it would overrun otherwise); the batch
    # holds R of them: the pool may not exceed R times the KV the user gave that context
    budget = int(llm._n_ctx) * (1 if ctx_holder.unified else n_seq)
    total = n_cells * (1 if ctx_holder.unified else n_seq)
    if total > max(budget, _PAD_CTX) or len(plan.prompt) + plan.max_tokens + _SLACK > llm._n_ctx:
        return None
    sequences: list[_Sequence] = []
    try:
        ctx = ctx_holder.acquire(llm, n_seq, n_cells)
        batch = ctx_holder.batch
        mem = llama_cpp.llama_get_memory(ctx)
        # the prompt in the chunks Llama.eval uses, logits for each chunk's last token
        n_batch, prompt = int(llm.n_batch), plan.prompt
        for i in range(0, len(prompt), n_batch):
            chunk = prompt[i:i + n_batch]
            _fill(batch, [(t, i + j, 0, j == len(chunk) - 1) for j, t in enumerate(chunk)])
            if llama_cpp.llama_decode(ctx, batch) != 0:
                return None
        for r in range(1, n_seq):
            llama_cpp.llama_memory_seq_cp(mem, 0, r, -1, -1)
        for seed in seeds:
            proxy = _Proxy(llm)
            proxy._seed = seed  # what _create_completion's set_seed(seed) does to the Llama
            chain = proxy._init_sampler(**{k: v for k, v in plan.sampling.items()
                                           if k in _INIT_SAMPLER_KEYS})
            sequences.append(_Sequence(seed=seed, sampler=chain))
        placeholder = np.zeros(1, dtype=np.single)

        def sample(r: int, row: int, pos: int) -> tuple[int, int, int, bool] | None:
            """Sample sequence r from the logits of batch row ``row``; the batch row that
            feeds its token back at ``pos``, or None when the sequence has ended."""
            seq = sequences[r]
            token = int(llama_cpp.llama_sampler_sample(seq.sampler.sampler, ctx, row))
            # generate() consults the criterion after sampling, before yielding, on the ids
            # evaluated so far (the new token is not among them)
            if plan.criterion is not None and plan.criterion(
                    np.array(prompt + seq.sampled, dtype=np.intc), placeholder):
                seq.done = seq.criterion_stopped = True
            elif _ends(llm, plan, seq, token):
                seq.done = True  # its last token is never evaluated, as in generate()
            else:
                return (token, pos, r, True)
            return None

        group = max(1, ctx_holder.group or exact_group(llm))
        # every sequence samples its first token from the shared prompt's last logits
        pos = len(prompt)
        step = [row for r in range(n_seq) if (row := sample(r, -1, pos)) is not None]
        while step:
            if pos + 1 >= llm._n_ctx:
                return None  # the sequential call would overrun its context here
            following: list[tuple[int, int, int, bool]] = []
            # a decode per group of sequences (see EXACT_GROUP); a group's logits are sampled
            # before the next decode overwrites them
            for g in range(0, len(step), group):
                part = step[g:g + group]
                _fill(batch, part)
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    return None  # no KV slot left (a long multi-byte run): go sequential
                following += [row for i, (_, _, r, _) in enumerate(part)
                              if (row := sample(r, i, pos + 1)) is not None]
            step = following
            pos += 1
        completions = [_replay(llm, op, request, plan, seq) for seq in sequences]
    except (_Exhausted, _Unsupported):
        return None
    finally:
        for seq in sequences:
            seq.sampler.close()
        if owned:
            ctx_holder.close()
    wall = time.perf_counter() - t0
    per_call = wall / n_seq
    completions = [replace(c, wall_seconds=per_call) for c in completions]
    return BatchResult(completions=completions, wall_seconds=wall, prompt_tokens=len(prompt),
                       generated_tokens=sum(c.completion_tokens for c in completions),
                       sequences=n_seq)


def _replay(llm: Any, op: str, request: Mapping[str, Any], plan: _Plan,
            seq: _Sequence) -> Completion:
    """The sequence's answer as llama-cpp-python's own code builds it from its tokens."""
    proxy, out = _probe(llm, op, request, seq.seed, seq.sampled, seq.evaluated,
                        strict=not seq.criterion_stopped)
    if proxy.consumed != len(seq.sampled):
        raise _Exhausted  # the library stopped earlier than our mirror of its rule
    choice = out["choices"][0]
    text = choice["text"] if op == "complete" else (choice["message"]["content"] or "")
    usage = out.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    # what the sequential Llama has evaluated when it returns (Completion.tokens is its
    # input_ids): the prompt and the reply but the token the loop stopped at
    tokens = tuple(plan.prompt) + tuple(seq.evaluated)
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=int(usage.get("completion_tokens", 0)),
        wall_seconds=0.0,
        prompt_eval_tokens=0,
        prompt_eval_ms=0.0,
        eval_tokens=0,
        eval_ms=0.0,
        finish_reason=choice.get("finish_reason"),
        tokens=tokens,
        prompt_text=llm.detokenize(list(tokens[:prompt_tokens]), special=True).decode(
            "utf-8", errors="replace"),
    )


__all__ = ["BatchContext", "BatchResult", "decode_repeats"]
