"""Fidelity to the reference, measured while a variant is resident and its group's cases have
run: the reference's top-k next-token distributions on its own tokens (kept in memory and in
pytest's cache), and each other variant's KLD, top-1 agreement and perplexity ratio on them.

The result is recorded as plain data for the verdict to read; nothing here runs at judging
time. Cached distributions must prove their key, and each case's first prompt must equal the
variant's own before the case's distributions are used: stale data never decides a gate.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pytest

from .config import Settings
from .fidelity import (
    CaseReference,
    Fidelity,
    ReferenceData,
    ReferenceFileError,
    Scorer,
    ScoringError,
    TopK,
    load_reference,
    perplexity_chunks,
    save_reference,
    score_sequences,
)
from .records import CaseRecord, case_key
from .variants import BrokenVariant, Variant

Calls = Mapping[str, Sequence[tuple[int, ...]]]  # nodeid -> each call's tokens (or prompts)


class ReferenceScores:
    """The reference's distributions per group (or for the corpus), and scoring against them."""

    def __init__(self, settings: Settings, variants: Mapping[str, Variant | BrokenVariant],
                 config: pytest.Config) -> None:
        self.settings = settings
        self.variants = variants
        self.config = config
        self._data: dict[str, ReferenceData] = {}  # group key or "corpus" -> distributions

    def measure(self, group: str, variant: str, llm: Any, cases: list[CaseRecord],
                prompts: Calls, tokens: Calls) -> tuple[dict[str, Any] | None, str | None]:
        """(fidelity figures, None) or (None, why not) for ``variant``'s cases of ``group``;
        for the reference itself, score and keep its distributions."""
        ref_name = self.settings.reference
        if ref_name is None:
            return None, "no reference: set reference: in quantgate.yaml"
        if llm is None:
            return None, "fidelity needs the model in the test process (isolation: none)"
        scorer = Scorer(llm)
        corpus = self.settings.fidelity_corpus is not None
        slot = "corpus" if corpus else group
        key, path = self._key(slot)
        try:
            if variant == ref_name:
                if slot not in self._data:
                    self._data[slot] = self._score_reference(scorer, key, cases, prompts, tokens)
                    if path is not None:
                        self._save(path, self._data[slot])
                return {"positions": 0, "reference": True}, None
            ref = self._data.get(slot)
            if ref is None and path is not None and path.is_file():
                ref = self._load(path, key)
            if ref is None:
                return None, (f"reference {ref_name} did not run in this session and no cached "
                              f"distributions match this setup for {slot.rsplit('/', 1)[-1]}; "
                              f"run once with {ref_name} selected")
            pairs, stale = self._pairs(ref, variant, cases, prompts, scorer)
            if stale:
                return None, stale
            fid = Fidelity()
            for seq, top in pairs:
                for lp, nxt in self._score(scorer, [seq]):
                    fid.add(top, lp, nxt)
        except ScoringError as exc:
            return None, f"fidelity: {exc}"
        out: dict[str, Any] = dict(fid.summary())
        out["reference"] = ref_name
        out["source"] = "corpus" if corpus else "group"
        return out, None

    def _score(self, scorer: Scorer, seqs: list[list[int]]) -> Iterator[tuple[np.ndarray, list[int]]]:
        if self.settings.fidelity_corpus is not None:  # the corpus is scored like llama-perplexity
            return perplexity_chunks(scorer, seqs)
        return score_sequences(scorer, seqs)

    def _corpus_chunks(self, scorer: Scorer) -> list[list[int]]:
        assert self.settings.fidelity_corpus is not None
        text = self.settings.fidelity_corpus.read_text(encoding="utf-8")
        try:
            return [list(c) for c in scorer.chunks(text, self.settings.fidelity_n_ctx)]
        except ScoringError as exc:
            raise ScoringError(f"fidelity.corpus: {exc}") from None

    def _score_reference(self, scorer: Scorer, key: str, cases: list[CaseRecord],
                         prompts: Calls, tokens: Calls) -> ReferenceData:
        k = self.settings.fidelity_top_k
        if self.settings.fidelity_corpus is not None:
            seqs = self._corpus_chunks(scorer)
            tops = [TopK.from_logprobs(lp, nxt, k) for lp, nxt in self._score(scorer, seqs)]
            return ReferenceData(key, {"corpus": CaseReference((), seqs, tops)})
        data: dict[str, CaseReference] = {}
        for c in cases:
            first = prompts.get(c.nodeid)
            if not first:
                continue
            seqs = [list(t) for t in tokens.get(c.nodeid, []) if len(t) >= 2]
            tops = [TopK.from_logprobs(lp, nxt, k) for lp, nxt in self._score(scorer, seqs)]
            data[case_key(c.nodeid, c.variant)] = CaseReference(tuple(first[0]), seqs, tops)
        return ReferenceData(key, data)

    def _pairs(self, ref: ReferenceData, variant: str, cases: list[CaseRecord], prompts: Calls,
               scorer: Scorer) -> tuple[list[tuple[list[int], TopK]], str | None]:
        """(sequence, reference top-k) to score for ``variant``'s cases, or why the reference
        data does not describe them: cases it lacks, or a first prompt that differs (the test
        or its data changed since the reference was scored)."""
        ref_name = self.settings.reference
        if self.settings.fidelity_corpus is not None:
            data = ref.cases.get("corpus")
            if data is None or data.seqs != self._corpus_chunks(scorer):
                return [], (f"the cached {ref_name} distributions were made on other corpus "
                            f"tokens; run once with {ref_name} selected")
            return list(zip(data.seqs, data.tops, strict=True)), None
        pairs: list[tuple[list[int], TopK]] = []
        missing: list[str] = []
        changed: list[str] = []
        for c in cases:
            first = prompts.get(c.nodeid)
            if not first:
                continue  # the case made no call on this variant: nothing to compare
            ck = case_key(c.nodeid, variant)
            case = ref.cases.get(ck)
            if case is None:
                missing.append(ck)
            elif case.first_prompt != tuple(first[0]):
                changed.append(ck)
            else:
                pairs.extend(zip(case.seqs, case.tops, strict=True))
        if changed:
            return [], (f"the {ref_name} distributions are stale: the prompt of {len(changed)} "
                        f"case(s) changed since they were scored (e.g. {changed[0]}); "
                        f"run once with {ref_name} selected")
        if missing:
            return [], (f"{ref_name} has no distributions for {len(missing)} case(s) "
                        f"(e.g. {missing[0]}); run them with {ref_name} selected")
        if not pairs:
            return [], "no tokens to score"
        return pairs, None

    def _key(self, slot: str) -> tuple[str, Path | None]:
        """The key of the reference's distributions: everything they depend on. The test
        module's source is in it for a group; the corpus's content for the corpus."""
        ref = self.variants.get(self.settings.reference or "")
        parts: dict[str, Any] = {
            "reference_sha256": ref.sha256 if isinstance(ref, Variant) else None,
            "slot": slot, "llama": dict(self.settings.llama),
            "generation": dict(self.settings.generation), "top_k": self.settings.fidelity_top_k,
            "n_ctx": self.settings.fidelity_n_ctx,
        }
        if self.settings.fidelity_corpus is not None:
            parts["corpus_sha256"] = hashlib.sha256(self.settings.fidelity_corpus.read_bytes()).hexdigest()
        else:
            module = self.config.rootpath / slot.split("::", 1)[0]
            parts["module_sha256"] = (hashlib.sha256(module.read_bytes()).hexdigest()
                                      if module.is_file() else None)
        key = json.dumps(parts, sort_keys=True, default=str)
        cache = getattr(self.config, "cache", None)
        if not isinstance(ref, Variant) or cache is None:
            return key, None
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return key, Path(cache.mkdir("quantgate-fidelity")) / f"{digest}.npz"

    @staticmethod
    def _load(path: Path, key: str) -> ReferenceData | None:
        try:
            return load_reference(path, key)
        except ReferenceFileError as exc:
            warnings.warn(pytest.PytestWarning(f"quantgate: ignoring cached reference distributions "
                                               f"{path.name}: {exc}"), stacklevel=1)
            return None

    @staticmethod
    def _save(path: Path, ref: ReferenceData) -> None:
        try:
            save_reference(path, ref)
        except OSError as exc:  # the cache is an optimization: the run goes on without it
            warnings.warn(pytest.PytestWarning(f"quantgate: cannot cache reference distributions: "
                                               f"{exc.strerror or exc}"), stacklevel=1)
