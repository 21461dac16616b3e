"""Teacher-forced scoring on a resident ``llama_cpp.Llama``: log-likelihoods, multiple choice,
llama-perplexity-compatible perplexity, and KL divergence against a reference variant.

llama-cpp-python only keeps every position's logits when a model is loaded with
``logits_all=True`` (n_ctx x n_vocab floats, 200 MB for SmolLM2 at n_ctx 1024). We instead
decode our own batches with logits requested for the positions we score, through the
``Llama._ctx``/``Llama._batch`` objects that ``Llama.eval`` itself uses, and read them with
``llama_get_logits``. The KV cache is cleared before and ``n_tokens`` reset after, so the
next ``chat``/``generate`` call starts clean.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np

DEFAULT_TOP_K = 1024  # keeps the top-k + tail KLD within ~2% of the full one on SmolLM2 (benchmarks)


class ScoringError(ValueError):
    """Input that cannot be scored (too long for the context, nothing to score)."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64, copy=False)
    m = x.max(axis=-1, keepdims=True)
    out: np.ndarray = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return out


class Scorer:
    """Scores token sequences on one loaded model."""

    def __init__(self, llm: Any) -> None:
        if llm is None:
            raise RuntimeError("scoring needs the model in the test process (isolation: none)")
        self.llm = llm
        self.n_vocab = int(llm.n_vocab())
        self.n_batch = int(llm.n_batch)
        self.n_ctx = int(llm.n_ctx())

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        # add_bos follows the model's own rule (SmolLM2 adds none), like common_tokenize(.., true)
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))

    def logits(self, tokens: Sequence[int], *, n_past: int = 0, first_output: int = 0) -> np.ndarray:
        """Logits for positions ``first_output..len(tokens)-1`` of ``tokens`` placed at
        ``n_past``; positions before ``n_past`` stay in the KV cache (a shared prompt)."""
        import llama_cpp

        if n_past + len(tokens) > self.n_ctx:
            raise ScoringError(f"{n_past + len(tokens)} tokens do not fit the context (n_ctx {self.n_ctx})")
        ctx, batch = self.llm._ctx, self.llm._batch
        ctx.kv_cache_seq_rm(-1, n_past, -1)
        rows: list[np.ndarray] = []
        try:
            for start in range(0, len(tokens), self.n_batch):
                chunk = list(tokens[start:start + self.n_batch])
                batch.set_batch(chunk, n_past=n_past + start, logits_all=True)
                for i in range(len(chunk)):  # only the rows we need leave the graph
                    batch.batch.logits[i] = start + i >= first_output
                batch.batch.logits[len(chunk) - 1] = True
                ctx.decode(batch)
                n_out = sum(1 for i in range(len(chunk)) if start + i >= first_output)
                if n_out:
                    first_row = len(chunk) - n_out
                    ptr = llama_cpp.llama_get_logits_ith(ctx.ctx, first_row)
                    rows.append(np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).copy())
        finally:
            self.llm.n_tokens = 0  # our decode bypassed Llama's bookkeeping: start clean next time
        return np.concatenate(rows) if rows else np.zeros((0, self.n_vocab), dtype=np.float32)

    @staticmethod
    def _nonempty(tokens: list[int], what: str) -> list[int]:
        if not tokens:
            raise ScoringError(f"{what} tokenizes to no tokens: nothing to score")
        return tokens

    # -- log-likelihood and multiple choice -------------------------------------------------
    def logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        """(sum of log p(continuation tokens | prompt), number of tokens)."""
        ctx_toks = self._nonempty(self.tokenize(prompt), "prompt")
        cont = self._nonempty(self.tokenize(continuation, add_bos=False), "continuation")
        lp = log_softmax(self.logits(ctx_toks + cont, first_output=len(ctx_toks) - 1))
        return float(sum(lp[i, t] for i, t in enumerate(cont))), len(cont)

    def choose(self, prompt: str, options: Sequence[str], *, normalize: bool = False) -> tuple[int, list[float]]:
        """Index of the option with the highest log-likelihood, and every option's score.

        The prompt is decoded once; each option reuses its KV cache from the prompt's end.
        ``normalize`` divides by the option's length in bytes, as lm-evaluation-harness's
        ``acc_norm`` does, so long options are not penalized for their length.
        """
        ctx_toks = self._nonempty(self.tokenize(prompt), "prompt")
        last = log_softmax(self.logits(ctx_toks, first_output=len(ctx_toks) - 1))[-1]
        scores = []
        for i, opt in enumerate(options):
            cont = self._nonempty(self.tokenize(opt, add_bos=False), f"options[{i}]")
            total = float(last[cont[0]])
            if len(cont) > 1:
                lp = log_softmax(self.logits(cont[:-1], n_past=len(ctx_toks)))
                total += float(sum(lp[i, t] for i, t in enumerate(cont[1:])))
            scores.append(total / max(1, len(opt.encode("utf-8"))) if normalize else total)
        return int(np.argmax(scores)), scores

    # -- perplexity, llama-perplexity's rules --------------------------------------------------
    def chunks(self, text: str, n_ctx: int) -> list[list[int]]:
        if n_ctx > self.n_ctx:
            raise ScoringError(f"n_ctx {n_ctx} exceeds the model's context (llama.n_ctx {self.n_ctx})")
        tokens = self.tokenize(text)
        if len(tokens) < 2 * n_ctx:
            raise ScoringError(f"need at least {2 * n_ctx} tokens for a context of {n_ctx}, "
                             f"the text has {len(tokens)}")
        add_bos = bool(self.llm._model.add_bos_token()) if hasattr(self.llm, "_model") else False
        out = []
        for i in range(len(tokens) // n_ctx):
            chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
            if add_bos:
                chunk[0] = int(self.llm.token_bos())
            out.append(chunk)
        return out


@dataclass
class TopK:
    """What is kept of the reference's distributions: the top-k log-probs per position, the
    log of the remaining mass, and the log-prob of the token that actually came next."""

    ids: np.ndarray  # (n, k) int32
    logp: np.ndarray  # (n, k) float32
    log_tail: np.ndarray  # (n,) float64: log(1 - sum exp(logp))
    next_logp: np.ndarray  # (n,) float64

    @classmethod
    def from_logprobs(cls, lp: np.ndarray, next_tokens: Sequence[int], k: int) -> TopK:
        k = min(k, lp.shape[1])
        ids = np.argpartition(-lp, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(lp, ids, axis=1)
        order = np.argsort(-vals, axis=1)  # keep top-1 first
        ids = np.take_along_axis(ids, order, axis=1).astype(np.int32)
        vals = np.take_along_axis(vals, order, axis=1)
        tail = np.log1p(-np.minimum(np.exp(vals).sum(axis=1), 1 - 1e-12))
        nxt = lp[np.arange(len(next_tokens)), np.asarray(next_tokens)]
        return cls(ids, vals.astype(np.float32), tail, nxt)

    def concat(self, other: TopK) -> TopK:
        return TopK(np.concatenate([self.ids, other.ids]), np.concatenate([self.logp, other.logp]),
                    np.concatenate([self.log_tail, other.log_tail]),
                    np.concatenate([self.next_logp, other.next_logp]))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "logp": self.logp, "log_tail": self.log_tail, "next_logp": self.next_logp}


@dataclass
class Fidelity:
    """Per-position comparison of a variant to the reference on the same tokens."""

    kld: np.ndarray = field(default_factory=lambda: np.zeros(0))
    top1_same: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0))  # variant, on the actual next token
    ref_nll: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, ref: TopK, lp: np.ndarray, next_tokens: Sequence[int]) -> None:
        q = np.take_along_axis(lp, ref.ids.astype(np.int64), axis=1)
        p = ref.logp.astype(np.float64)
        head = (np.exp(p) * (p - q)).sum(axis=1)
        q_tail = np.log1p(-np.minimum(np.exp(q).sum(axis=1), 1 - 1e-12))
        tail = np.exp(ref.log_tail) * (ref.log_tail - q_tail)
        self.kld = np.concatenate([self.kld, np.maximum(head + tail, 0.0)])
        self.top1_same = np.concatenate([self.top1_same, lp.argmax(axis=1) == ref.ids[:, 0]])
        self.nll = np.concatenate([self.nll, -lp[np.arange(len(next_tokens)), np.asarray(next_tokens)]])
        self.ref_nll = np.concatenate([self.ref_nll, -ref.next_logp])

    def summary(self) -> dict[str, float | int]:
        n = len(self.kld)
        if not n:
            return {"positions": 0}
        ppl, ref_ppl = math.exp(float(self.nll.mean())), math.exp(float(self.ref_nll.mean()))
        return {
            "positions": n,
            "mean_kld": float(self.kld.mean()),
            "p99_kld": float(np.percentile(self.kld, 99)),
            "top1_agreement": float(self.top1_same.mean()),
            "perplexity": ppl,
            "reference_perplexity": ref_ppl,
            "perplexity_ratio": ppl / ref_ppl,
            "mean_nll": float(self.nll.mean()),  # kept so per-variant figures can pool groups
            "ref_mean_nll": float(self.ref_nll.mean()),
        }


@dataclass
class CaseReference:
    """The reference's data for one case: the first prompt it was asked (what the test code
    determines, so a changed prompt is detected), every call's tokens, and their top-k."""

    first_prompt: tuple[int, ...]
    seqs: list[list[int]]
    tops: list[TopK]


@dataclass
class ReferenceData:
    """Everything fidelity scoring needs from the reference, for one group (or the corpus),
    with the key it was made under: a file whose key differs is never used."""

    key: str
    cases: dict[str, CaseReference]  # case key (or "corpus") -> its data


class ReferenceFileError(Exception):
    """A cached reference file that is corrupt or was made under another key."""


def save_reference(path: Path, ref: ReferenceData) -> None:
    """One .npz of plain arrays (no pickle), written atomically: another xdist worker never
    reads half a file."""
    names = sorted(ref.cases)
    seq_case: list[int] = []
    seqs: list[list[int]] = []
    tops: list[TopK] = []
    for i, name in enumerate(names):
        for seq, top in zip(ref.cases[name].seqs, ref.cases[name].tops, strict=True):
            seq_case.append(i)
            seqs.append(seq)
            tops.append(top)
    empty = TopK(np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32), np.zeros(0), np.zeros(0))
    merged = tops[0] if tops else empty
    for t in tops[1:]:
        merged = merged.concat(t)
    firsts = [ref.cases[n].first_prompt for n in names]
    arrays: dict[str, Any] = {
        "key": np.array(ref.key),
        "case_names": np.array(names, dtype=str) if names else np.zeros(0, dtype="U1"),
        "first_lengths": np.array([len(f) for f in firsts], dtype=np.int64),
        "first_tokens": np.array([t for f in firsts for t in f], dtype=np.int32),
        "seq_case": np.array(seq_case, dtype=np.int64),
        "lengths": np.array([len(q) for q in seqs], dtype=np.int64),
        "tokens": np.array([t for q in seqs for t in q], dtype=np.int32),
        "rows": np.array([len(t.ids) for t in tops], dtype=np.int64),
        **merged.to_arrays(),
    }
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_reference(path: Path, key: str) -> ReferenceData:
    """Read a file written by ``save_reference``; raise ReferenceFileError unless it is whole,
    consistent and made under ``key``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zip, npy header, pickle refusal: all mean "not ours"
        raise ReferenceFileError(f"unreadable ({type(exc).__name__})") from None
    try:
        if str(arrays["key"]) != key:
            raise ReferenceFileError("made under another key")
        names = [str(n) for n in arrays["case_names"]]
        first_lengths, first_tokens = arrays["first_lengths"], arrays["first_tokens"]
        seq_case, lengths, tokens, rows = (arrays["seq_case"], arrays["lengths"], arrays["tokens"],
                                           arrays["rows"])
        if (len(first_lengths) != len(names) or int(first_lengths.sum()) != len(first_tokens)
                or not len(seq_case) == len(lengths) == len(rows)
                or int(lengths.sum()) != len(tokens) or int(rows.sum()) != len(arrays["ids"])
                or (len(seq_case) and (seq_case.min() < 0 or seq_case.max() >= len(names)))):
            raise ReferenceFileError("inconsistent arrays")
        cases: dict[str, CaseReference] = {}
        at = 0
        for name, n in zip(names, first_lengths, strict=True):
            cases[name] = CaseReference(tuple(int(t) for t in first_tokens[at:at + n]), [], [])
            at += int(n)
        at = row = 0
        for c, n, r in zip(seq_case, lengths, rows, strict=True):
            case = cases[names[int(c)]]
            case.seqs.append([int(x) for x in tokens[at:at + n]])
            sl = slice(row, row + int(r))
            case.tops.append(TopK(arrays["ids"][sl], arrays["logp"][sl], arrays["log_tail"][sl],
                                  arrays["next_logp"][sl]))
            at, row = at + int(n), row + int(r)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ReferenceFileError(f"malformed ({type(exc).__name__})") from None
    return ReferenceData(key, cases)


def score_sequences(scorer: Scorer, sequences: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Teacher forcing: for each sequence, log-probs at positions 0..n-2 and the tokens that
    came next (positions 1..n-1). A generator: one sequence's full-vocabulary rows at a time."""
    for seq in sequences:
        if len(seq) < 2:
            continue
        lp = log_softmax(scorer.logits(list(seq)[:-1]))
        yield lp, list(seq)[1:]


def perplexity_chunks(scorer: Scorer, chunks: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, list[int]]]:
    """llama-perplexity's scoring: each chunk of n_ctx tokens is decoded whole and only its
    second half is scored (positions first..n_ctx-2 predicting first+1..n_ctx-1). A generator."""
    for chunk in chunks:
        n_ctx = len(chunk)
        first = n_ctx // 2
        lp = log_softmax(scorer.logits(list(chunk), first_output=first)[: n_ctx - 1 - first])
        yield lp, list(chunk)[first + 1:]


def perplexity(scorer: Scorer, text: str, n_ctx: int | None = None) -> dict[str, float | int]:
    chunks = scorer.chunks(text, n_ctx or scorer.n_ctx)
    nll = np.concatenate([-lp[np.arange(len(t)), np.asarray(t)] for lp, t in perplexity_chunks(scorer, chunks)])
    return {"perplexity": math.exp(float(nll.mean())), "tokens_scored": int(len(nll)), "chunks": len(chunks)}
