"""``QuantSession``: owns one run's state. Built in ``pytest_configure``, kept in
``config.stash`` and registered as a plugin, so the hooks below are its methods."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable, Generator

import psutil
import pytest

from .baseline import (
    BaselineError,
    build_baseline,
    case_key,
    compare_group,
    fingerprint_changes,
    merge_baseline,
    read_baseline,
    write_baseline,
)
from .config import Settings
from .display import show
from .stats import paired, wilson
from .measure import CallTotals
from .pool import LoadError, ModelPool
from .rubric import MB, GroupFigures, Rubric, RubricError, evaluate, parse_rubric
from .report import environment
from .summary import CaseRecord, Summary, build_summary, render_lines, render_markdown
from .variants import BrokenVariant, Variant, estimate_memory_bytes

MARKER = "quant_rubric"
PARAM = "quant_variant"
CASE_PROP = "quantgate.case"
VARIANT_PROP = "quantgate.variant"
CALLS_PROP = "quantgate.calls"
VERDICT_PROP = "quantgate.verdict"
MISS_PREFIX = "quant miss: "
GUARD_FACTOR = 3  # refuse to load past this multiple of the tightest memory_mb ceiling


@dataclass(frozen=True)
class Group:
    key: str  # nodeid-like: the module, class or function the quant_rubric marker sits on
    rubric: Rubric


class RubricItem(pytest.Item):
    """The verdict test for one (eval group, variant): runs after the group's cases."""

    def __init__(self, *, group: Group, variant: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.variant = variant

    def runtest(self) -> None:
        __tracebackhide__ = True
        qs = self.config.stash[SESSION_KEY]
        try:
            verdict = qs.verdict(self.group, self.variant)
        except Exception as exc:  # never lose the verdict: record it as a failed one
            verdict = qs.failed_verdict(self.group, self.variant,
                                        f"could not evaluate the rubric: {type(exc).__name__}: {exc}")
        self.user_properties.append((VERDICT_PROP, verdict))
        for key in ("accuracy", "tokens_per_second", "memory_mb", "disk_mb", "load_seconds"):
            if verdict.get(key) is not None:  # flat figures for JUnit XML dashboards
                self.user_properties.append((f"quantgate.{key}", round(verdict[key], 4)))
        if verdict["reasons"]:
            pytest.fail("\n".join(verdict["reasons"]), pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Like Function.reportinfo: the part of the id below the module, dotted.
        module_id = self.nodeid.split("::", 1)
        return self.path, None, (module_id[1] if len(module_id) > 1 else self.name).replace("::", ".")


class QuantSession:
    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        variants: dict[str, Variant | BrokenVariant],
        selected: tuple[str, ...],
        gate: str,
        report_path: Path | None,
        *,
        baseline_path: Path | None = None,
        baseline: dict[str, Any] | None = None,
        update_baseline: bool = False,
    ) -> None:
        self.config = config
        self.settings = settings
        self.variants = variants  # every configured variant, preflighted
        self.selected = selected  # names in run order
        self.gate = gate
        self.report_path = report_path
        self.baseline_path = baseline_path
        self.baseline = baseline  # None when absent or being rewritten
        self.update_baseline = update_baseline
        seed = settings.llama.get("seed")
        n_ctx = settings.llama.get("n_ctx")
        self.pool = ModelPool(self._load, settings.generation, seed if isinstance(seed, int) else None,
                              prepare=_import_llama_cpp,
                              n_ctx=n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None)
        self.groups: dict[str, Group] = {}
        self._item_group: dict[str, str] = {}  # nodeid -> group key
        self.cases: dict[str, CaseRecord] = {}  # nodeid -> final outcome
        self.verdicts: dict[tuple[str, str], dict[str, Any]] = {}
        self.variant_snapshots: dict[str, dict[str, Any]] = {}
        self.other_failures = 0  # failures in tests that are not about a variant
        self.ref_dists: dict[str, Any] = {}  # group/corpus -> fidelity.ReferenceData
        self.summary: Summary | None = None
        self.baseline_note: str | None = None
        self.output_errors: list[str] = []  # outputs that could not be written, one line each
        self.narrowed = False  # -k, -m, --deselect, --lf or node ids: the run saw a subset

    # -- loading ---------------------------------------------------------------------------
    def _load(self, variant: Variant) -> Any:
        self._guard_memory(variant)
        loaded = self.config.hook.pytest_quantgate_load_model(
            config=self.config, variant=variant, llama_kwargs=self.settings.llama
        )
        if loaded is None:
            raise RuntimeError("no backend returned a model (pytest_quantgate_load_model)")
        return loaded

    def _guard_memory(self, variant: Variant) -> None:
        """Refuse a load that cannot fit, rather than be OOM-killed and lose the session."""
        need = estimate_memory_bytes(variant, self.settings.llama)
        available = psutil.virtual_memory().available
        if need > available * 0.9:
            raise MemoryError(
                f"needs at least {need / MB:,.0f} MB (weights, KV cache, logits) but only "
                f"{available / MB:,.0f} MB is available; not loaded"
            )
        # Refuse on the rubric only when no group could pass: every group has a memory_mb
        # ceiling and the floor is far over even the loosest. A tight ceiling on one slice
        # must not block the variant for the slices that have none.
        ceilings = [g.rubric.memory_mb for g in self.groups.values()]
        if ceilings and all(ceilings) and need / MB > GUARD_FACTOR * max(c for c in ceilings if c):
            loosest = max(c for c in ceilings if c)
            raise MemoryError(
                f"needs at least {need / MB:,.0f} MB, over {GUARD_FACTOR}x the loosest memory_mb "
                f"{loosest:g} of its groups; not loaded (raise memory_mb or drop the variant)"
            )

    # -- collection ------------------------------------------------------------------------
    @staticmethod
    def variant_of(item: pytest.Item) -> str | None:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and PARAM in callspec.params:
            return str(callspec.params[PARAM])
        if isinstance(item, RubricItem):
            return item.variant
        return None

    def _group_for(self, item: pytest.Item) -> Group | None:
        marks = list(item.iter_markers_with_node(MARKER))
        if not marks:
            return None
        node, _ = marks[0]
        if node is item:  # marker on the function: group = the function across its params
            key = f"{item.parent.nodeid}::{getattr(item, 'originalname', item.name)}" if item.parent else item.nodeid
        else:
            key = node.nodeid
        if key in self.groups:
            return self.groups[key]
        rubric = self.settings.rubric_defaults
        for _node, mark in reversed(marks):  # farthest first, so closer markers override
            if mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: {MARKER}: takes keyword arguments only, got {show(mark.args)}"
                )
            try:
                rubric = rubric.merged(parse_rubric(mark.kwargs))
            except RubricError as exc:
                raise pytest.UsageError(f"{item.nodeid}: {MARKER}: {exc}") from None
        if rubric.needs_fidelity and self.settings.isolation == "process":
            raise pytest.UsageError(
                f"{item.nodeid}: {MARKER}: max_kld/min_top1_agreement/max_perplexity_ratio need the "
                "model in the test process, but isolation is process; use --quant-isolation=none"
            )
        group = Group(key, rubric)
        self.groups[key] = group
        return group

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection, so verdicts match what runs
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        order = {name: i for i, name in enumerate(self.selected)}
        # Stable sort: tests without a variant first, then one block per variant in run
        # order, each block in collection order. One block = one load = one resident model.
        items.sort(key=lambda it: order.get(self.variant_of(it) or "", -1))
        out: list[pytest.Item] = []
        grouped_items: list[tuple[pytest.Item, str]] = []
        last_index: dict[tuple[str, str], int] = {}
        parents: dict[tuple[str, str], pytest.Item] = {}
        for item in items:
            variant = self.variant_of(item)
            group = self._group_for(item) if variant is not None else None
            out.append(item)
            if variant is not None and group is not None:
                grouped_items.append((item, group.key))
                last_index[(group.key, variant)] = len(out) - 1
                parents[(group.key, variant)] = item
        inserts = sorted(last_index.items(), key=lambda kv: kv[1], reverse=True)
        # Verdict items are made here, after pytest's own --deselect ran: apply it to them too.
        deselect = tuple(config.getoption("deselect", None) or ())
        for (gkey, variant), idx in inserts:
            verdict = self._verdict_item(parents[(gkey, variant)], self.groups[gkey], variant)
            if deselect and verdict.nodeid.startswith(deselect):
                config.hook.pytest_deselected(items=[verdict])
                continue
            out.insert(idx + 1, verdict)
        items[:] = out
        if (self.settings.rubric_defaults.thresholds() and not self.groups
                and any(self.variant_of(it) is not None for it in items)):
            import warnings

            warnings.warn(pytest.PytestConfigWarning(
                f"{self.settings.config_path.name}: rubric: thresholds are set but no test has a "
                f"{MARKER} marker, so nothing is judged; mark your eval modules with "
                f"pytestmark = pytest.mark.{MARKER}()"), stacklevel=1)
        self._check_baseline_comparable(list(last_index))
        if config.pluginmanager.hasplugin("xdist"):
            # Under `pytest -n`, a variant's cases and its verdicts must share one worker: the
            # verdict reads the cases' outcomes and the model is loaded once per worker. Gates
            # that compare to the reference need its results in the same process, so then all
            # variants share one worker (correct, not parallel).
            needs_reference = any(g.rubric.needs_fidelity or g.rubric.max_drop_vs_reference is not None
                                  for g in self.groups.values())
            for item in items:
                variant = self.variant_of(item)
                if variant is not None:
                    xgroup = "quantgate" if needs_reference else variant
                    item.add_marker(pytest.mark.xdist_group(name=xgroup))
                    grouped = getattr(config, "workerinput", {}).get("quantgate_loadgroup")
                    if grouped and not item.nodeid.endswith("@" + xgroup):
                        # xdist turns marks into "@group" node id suffixes in a hook that ran
                        # before this trylast one (which must follow -k); apply the same rule.
                        _set_nodeid(item, f"{item.nodeid}@{xgroup}")
        for item, key in grouped_items:  # keyed by final node ids
            self._item_group[item.nodeid] = key

    def _check_baseline_comparable(self, pairs: list[tuple[str, str]]) -> None:
        if self.baseline is None or not pairs:
            return
        known = {(g, v) for v, data in self.baseline["variants"].items() for g in data.get("groups", {})}
        if not known & set(pairs):
            raise pytest.UsageError(
                f"{self.baseline_path}: nothing in this run is comparable to the baseline (no "
                "variant and eval group in common); write a new one with pytest --quant-update-baseline"
            )

    def _verdict_item(self, case: pytest.Item, group: Group, variant: str) -> RubricItem:
        marks = list(case.iter_markers_with_node(MARKER))
        node = marks[0][0]
        if node is case:  # function-level group: sit beside the function, named after it
            parent: pytest.Collector | None = case.parent
            name = f"{getattr(case, 'originalname', case.name)}::{MARKER}[{variant}]"
        else:
            assert isinstance(node, pytest.Collector)
            parent = node
            name = f"{MARKER}[{variant}]"
        assert parent is not None
        return RubricItem.from_parent(parent, name=name, group=group, variant=variant)

    # -- running ---------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: tell workers that we switched scheduling to loadgroup."""
        if self.config.getoption("dist", "no") == "loadgroup":
            node.workerinput["quantgate_loadgroup"] = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.pool.current_test = item.nodeid

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        variant = self.variant_of(item)
        if variant is not None and (nextitem is None or self.variant_of(nextitem) != variant):
            self.pool.release()  # the variant's block is over: free it before the next loads

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        variant = self.variant_of(item)
        group_key = self._item_group.get(item.nodeid)
        if variant is not None and not isinstance(item, RubricItem) and call.when == "setup":
            item.user_properties.append((CASE_PROP, {"variant": variant, "group": group_key}))
        if variant is not None and call.when == "teardown":
            stats = self.pool.stats.get(variant)
            if stats is not None:
                item.user_properties.append((VARIANT_PROP, stats.to_dict()))
            totals = self.pool.test_totals.get(item.nodeid)
            if totals is not None:
                item.user_properties.append((CALLS_PROP, totals.to_dict()))
        outcome = yield
        rep = outcome.get_result()
        if (
            call.when == "call" and rep.failed and group_key is not None
            and self.groups[group_key].rubric.counts_misses
            and call.excinfo is not None and call.excinfo.errisinstance(AssertionError)
        ):
            origin = _raised_in_library(call.excinfo)
            if origin is not None:
                # llama-cpp-python's own `assert self.n_tokens > 0` is a fault, not a wrong answer
                rep.sections.append(("quantgate", f"AssertionError raised inside {origin}: "
                                                  "counted as a failure, not a miss"))
                return
            # A miss: it counts against the group's accuracy instead of failing the session.
            rep.outcome = "skipped"
            first = (str(call.excinfo.value) or "assertion failed").splitlines()[0]
            rep.wasxfail = MISS_PREFIX + _one_line(first)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.other_failures += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not hasattr(self.config, "workerinput"):
            # The "@variant" suffix exists only to steer xdist's loadgroup scheduler; pytest 9
            # re-parses ids with it as "test_v[Q4_K_M-1]@Q4_K_M]" (a stray bracket in JUnit and
            # terminal ids). Reports reach the rest of the controller without it.
            for group in (*self.selected, "quantgate"):
                if report.nodeid.endswith(f"]@{group}"):
                    report.nodeid = report.nodeid[: -len(group) - 1]
                    break
        props: dict[str, Any] = dict(report.user_properties)  # our values are plain dicts
        case = props.get(CASE_PROP)
        if VARIANT_PROP in props:
            snap = props[VARIANT_PROP]
            self.variant_snapshots[snap["name"]] = snap
        if VERDICT_PROP in props and report.when == "call":
            v = dict(props[VERDICT_PROP])
            v["passed"] = report.passed
            self.verdicts[(v["group"], v["variant"])] = v
            return
        if case is None:
            # a verdict's own failure is about its variant; anything else (a module fixture's
            # teardown error landing on a verdict item, a plain test) fails the run regardless
            if report.failed and not (_is_verdict(report) and report.when == "call"):
                self.other_failures += 1
            return
        outcome = _case_outcome(report)
        if outcome is None:
            return
        prev = self.cases.get(report.nodeid)
        if report.when == "teardown" and prev is not None and outcome != "error":
            return  # a clean teardown keeps the call's outcome
        message = ""
        if outcome == "skipped" and isinstance(report.longrepr, tuple):
            message = _one_line(str(report.longrepr[2]))  # (path, line, "Skipped: why")
        elif outcome == "miss":
            message = str(getattr(report, "wasxfail", ""))[len(MISS_PREFIX):]
        elif outcome in ("failed", "error"):
            message = _one_line(report.longreprtext.strip().splitlines()[-1] if report.longreprtext else "")
        self.cases[report.nodeid] = CaseRecord(report.nodeid, case["variant"], case["group"], outcome, message)

    # -- verdicts --------------------------------------------------------------------------
    def _case_counts(self, group: Group, variant_name: str) -> dict[str, Any]:
        mine = [c for c in self.cases.values() if c.group == group.key and c.variant == variant_name]
        ran = [c for c in mine if c.outcome != "skipped"]
        passed = sum(c.outcome == "passed" for c in ran)
        return {"cases": len(ran), "passed_cases": passed,
                "misses": sum(c.outcome == "miss" for c in ran),
                "failures": sum(c.outcome in ("failed", "error") for c in ran),
                "accuracy": passed / len(ran) if ran else None,
                "accuracy_ci": list(wilson(passed, len(ran))) if ran else None}

    def failed_verdict(self, group: Group, variant_name: str, reason: str) -> dict[str, Any]:
        """A verdict whose evaluation raised: it fails, but keeps the figures of the cases that ran."""
        return {"group": group.key, "variant": variant_name, "thresholds": group.rubric.thresholds(),
                **self._case_counts(group, variant_name), "reasons": [reason]}

    def _no_evidence(self, group: Group, variant_name: str) -> str | None:
        """Why there is nothing to judge, if so: no evidence is not a pass."""
        mine = [c for c in self.cases.values() if c.group == group.key and c.variant == variant_name]
        if any(c.outcome != "skipped" for c in mine):
            return None
        why = next((c.message for c in mine if c.message), "")
        return (f"no verdict: none of its {len(mine)} case(s) was evaluated on {variant_name}, "
                f"all skipped{': ' + why if why else ''}")

    def verdict(self, group: Group, variant_name: str) -> dict[str, Any]:
        """Figures and reasons for one (group, variant); pure evaluation lives in rubric.py."""
        mine = [c for c in self.cases.values() if c.group == group.key and c.variant == variant_name]
        ran = [c for c in mine if c.outcome != "skipped"]
        no_evidence = self._no_evidence(group, variant_name)
        if no_evidence is not None:
            verdict = self.failed_verdict(group, variant_name, no_evidence)
            verdict["no_verdict"] = True
            return verdict
        totals = self._group_totals(group.key, variant_name)
        variant = self.variants[variant_name]
        stats = self.pool.stats.get(variant_name)
        disk = variant.size_mb if isinstance(variant, Variant) else 0.0
        fig = GroupFigures(
            cases=len(ran),
            passed=sum(c.outcome == "passed" for c in ran),
            misses=sum(c.outcome == "miss" for c in ran),
            failures=sum(c.outcome in ("failed", "error") for c in ran),
            gen_tokens=totals.gen_tokens,
            gen_seconds=totals.gen_seconds,
            prompt_tokens=totals.prompt_eval_tokens,
            prompt_ms=totals.prompt_eval_ms,
            memory_mb=stats.memory_mb if stats else None,
            disk_mb=disk,
            load_seconds=stats.load_seconds if stats else None,
        )
        fig = self._comparisons(group, variant_name, mine, fig)
        reasons = evaluate(group.rubric, fig)
        not_loaded = self.pool.load_failure(variant_name)
        if not_loaded is not None:  # the cause, not "accuracy 0.00" from cases that never ran
            reasons = [not_loaded]
        if isinstance(variant, BrokenVariant):
            reasons.insert(0, variant.reason)
        return {
            "group": group.key,
            "variant": variant_name,
            "thresholds": group.rubric.thresholds(),
            "cases": fig.cases,
            "passed_cases": fig.passed,
            "misses": fig.misses,
            "failures": fig.failures,
            "accuracy": fig.accuracy,
            "tokens_per_second": fig.tokens_per_second,
            "prompt_tokens_per_second": fig.prompt_tokens_per_second,
            "memory_mb": fig.memory_mb,
            "disk_mb": fig.disk_mb,
            "load_seconds": fig.load_seconds,
            "accuracy_ci": list(wilson(fig.passed, fig.cases)) if fig.cases else None,
            "baseline": fig.baseline.to_dict() if fig.baseline else None,
            "vs_reference": (
                {"reference": fig.reference_name, **fig.reference.to_dict()} if fig.reference else None
            ),
            "fidelity": fig.fidelity,
            "reasons": reasons,
        }

    def _outcomes(self, group_key: str, variant: str) -> dict[str, str]:
        """``{case key: outcome}`` of one (group, variant) in this run."""
        return {
            case_key(c.nodeid, variant): c.outcome
            for c in self.cases.values()
            if c.group == group_key and c.variant == variant and c.outcome != "skipped"
        }

    def _comparisons(self, group: Group, variant: str, mine: list[CaseRecord],
                     fig: GroupFigures) -> GroupFigures:
        now = self._outcomes(group.key, variant)
        base_cmp = None
        if self.baseline is not None:
            old = self.baseline["variants"].get(variant, {}).get("groups", {}).get(group.key)
            if old is not None:
                base_cmp = compare_group(old["cases"], now)
        ref_name = self.settings.reference
        ref_cmp, missing = None, None
        if group.rubric.max_drop_vs_reference is not None:
            if ref_name is None:
                missing = "no reference: set reference: in quantgate.yaml"
            else:
                ref = self._outcomes(group.key, ref_name) if ref_name in self.selected else {}
                source = "this run"
                if not ref and self.baseline is not None:
                    ref = self.baseline["variants"].get(ref_name, {}).get("groups", {}).get(group.key, {}).get("cases", {})
                    source = "the baseline"
                if not ref:
                    missing = (f"reference {ref_name} did not run (select it with --quant-variants) "
                               "and no baseline holds its results")
                elif not set(ref) & set(now):
                    missing = f"no case in common with reference {ref_name}"
                else:
                    ref_cmp = paired({k: o == "passed" for k, o in ref.items()},
                                     {k: o == "passed" for k, o in now.items()},
                                     gated_drop=group.rubric.max_drop_vs_reference)
                    ref_name = f"{ref_name}" + ("" if source == "this run" else " (from the baseline)")
        fidelity, fid_missing = None, None
        if group.rubric.needs_fidelity or self.settings.fidelity_corpus is not None:
            fidelity, fid_missing = self._fidelity(group, variant, mine)
        return replace(fig, baseline=base_cmp, reference=ref_cmp, reference_name=ref_name,
                       reference_missing=missing, fidelity=fidelity, fidelity_missing=fid_missing)

    # -- fidelity to the reference -------------------------------------------------------------
    def _fidelity(self, group: Group, variant: str,
                  mine: list[CaseRecord]) -> tuple[dict[str, Any] | None, str | None]:
        """KLD, top-1 agreement and perplexity ratio of ``variant`` against the reference,
        on the tokens the reference's own calls in this group produced (or on the corpus)."""
        from .fidelity import Fidelity, Scorer, ScoringError

        ref_name = self.settings.reference
        if ref_name is None:
            return None, "no reference: set reference: in quantgate.yaml"
        v = self.variants[variant]
        if not isinstance(v, Variant):
            return None, f"{variant} did not load"
        try:
            model = self.pool.get(v)
        except LoadError as exc:
            return None, str(exc)
        if model.llm is None:
            return None, "fidelity needs the model in the test process (isolation: none)"
        scorer = Scorer(model.llm)
        corpus = self.settings.fidelity_corpus is not None
        slot = "corpus" if corpus else group.key
        key, path = self._ref_key(slot)
        try:
            if variant == ref_name:
                if slot not in self.ref_dists:
                    self.ref_dists[slot] = self._score_reference(scorer, key, mine)
                    if path is not None:
                        self._save_reference(path, self.ref_dists[slot])
                return {"positions": 0, "reference": True}, None
            ref = self.ref_dists.get(slot)
            if ref is None and path is not None and path.is_file():
                ref = self._load_reference(path, key)
            if ref is None:
                return None, (f"reference {ref_name} did not run in this session and no cached "
                              f"distributions match this setup for {_short_key(slot)}; "
                              f"run once with {ref_name} selected")
            pairs, stale = self._reference_pairs(ref, variant, mine, scorer)
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

    def _score(self, scorer: Any, seqs: list[list[int]]) -> Any:
        from .fidelity import perplexity_chunks, score_sequences

        if self.settings.fidelity_corpus is not None:  # the corpus is scored like llama-perplexity
            return perplexity_chunks(scorer, seqs)
        return score_sequences(scorer, seqs)

    def _corpus_chunks(self, scorer: Any) -> list[list[int]]:
        from .fidelity import ScoringError

        assert self.settings.fidelity_corpus is not None
        text = self.settings.fidelity_corpus.read_text(encoding="utf-8")
        try:
            return [list(c) for c in scorer.chunks(text, self.settings.fidelity_n_ctx)]
        except ScoringError as exc:
            raise ScoringError(f"fidelity.corpus: {exc}") from None

    def _score_reference(self, scorer: Any, key: str, mine: list[CaseRecord]) -> Any:
        from .fidelity import CaseReference, ReferenceData, TopK

        k = self.settings.fidelity_top_k
        if self.settings.fidelity_corpus is not None:
            seqs = self._corpus_chunks(scorer)
            tops = [TopK.from_logprobs(lp, nxt, k) for lp, nxt in self._score(scorer, seqs)]
            return ReferenceData(key, {"corpus": CaseReference((), seqs, tops)})
        cases: dict[str, CaseReference] = {}
        for c in mine:
            prompts = self.pool.test_prompts.get(c.nodeid)
            if not prompts:
                continue
            seqs = [list(t) for t in self.pool.test_tokens.get(c.nodeid, []) if len(t) >= 2]
            tops = [TopK.from_logprobs(lp, nxt, k) for lp, nxt in self._score(scorer, seqs)]
            cases[case_key(c.nodeid, c.variant)] = CaseReference(tuple(prompts[0]), seqs, tops)
        return ReferenceData(key, cases)

    def _reference_pairs(self, ref: Any, variant: str, mine: list[CaseRecord],
                         scorer: Any) -> tuple[list[tuple[list[int], Any]], str | None]:
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
        pairs: list[tuple[list[int], Any]] = []
        missing: list[str] = []
        changed: list[str] = []
        for c in mine:
            prompts = self.pool.test_prompts.get(c.nodeid)
            if not prompts:
                continue  # the case made no call on this variant: nothing to compare
            ck = case_key(c.nodeid, variant)
            data = ref.cases.get(ck)
            if data is None:
                missing.append(ck)
            elif data.first_prompt != tuple(prompts[0]):
                changed.append(ck)
            else:
                pairs.extend(zip(data.seqs, data.tops, strict=True))
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

    def _ref_key(self, slot: str) -> tuple[str, Path | None]:
        """The key of the reference's distributions: everything they depend on. The test
        module's source is in it for a group; the corpus's content for the corpus."""
        import hashlib

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

    def _load_reference(self, path: Path, key: str) -> Any:
        from .fidelity import ReferenceFileError, load_reference

        try:
            return load_reference(path, key)
        except ReferenceFileError as exc:
            import warnings

            warnings.warn(pytest.PytestWarning(f"quantgate: ignoring cached reference distributions "
                                               f"{path.name}: {exc}"), stacklevel=1)
            return None

    def _save_reference(self, path: Path, ref: Any) -> None:
        from .fidelity import save_reference

        try:
            save_reference(path, ref)
        except OSError as exc:  # the cache is an optimization: the run goes on without it
            import warnings

            warnings.warn(pytest.PytestWarning(f"quantgate: cannot cache reference distributions: "
                                               f"{exc.strerror or exc}"), stacklevel=1)

    def _group_totals(self, group_key: str, variant: str) -> CallTotals:
        total = CallTotals()
        for nodeid, c in self.cases.items():
            t = self.pool.test_totals.get(nodeid)
            if c.group == group_key and c.variant == variant and t is not None:
                total.merge(t)
        return total

    # -- the end ---------------------------------------------------------------------------
    def build(self, incomplete: bool) -> Summary:
        info: dict[str, dict[str, Any]] = {}
        for name in self.selected:
            v = self.variants[name]
            d = v.to_dict() if isinstance(v, Variant) else {"name": v.name, "path": str(v.path), "size_bytes": 0}
            d["stats"] = self.variant_snapshots.get(name) or (
                self.pool.stats[name].to_dict() if name in self.pool.stats else {}
            )
            info[name] = d
        return build_summary(
            variants=info,
            cases=list(self.cases.values()),
            verdicts=self.verdicts,
            gate=self.gate,
            incomplete=incomplete,
            environment=environment(self.settings),
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.pool.release()
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller builds the summary from our reports
        # Ctrl-C, -x / --maxfail, or a plugin asking to stop: the figures cover part of the run.
        interrupted = (exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
                       or bool(session.shouldfail))
        self.summary = self.build(incomplete=interrupted)
        fresh = build_baseline(self.summary, list(self.cases.values()), dict(self.settings.llama),
                               dict(self.settings.generation))
        blessed: dict[str, Any] | None = None
        if self.update_baseline and self.baseline_path is not None and self.summary.rows:
            if interrupted:
                self.baseline_note = "baseline not written: the run was interrupted"
            else:
                blessed = fresh
                if self.baseline_path.is_file():
                    try:
                        blessed = merge_baseline(read_baseline(self.baseline_path), fresh,
                                                 **self._bless_scope())
                    except BaselineError:
                        pass  # unreadable: this run's results replace it
                self.baseline_note = f"baseline written: {self.baseline_path}"
        elif self.baseline is not None:
            changes = fingerprint_changes(self.baseline["fingerprint"], fresh["fingerprint"])
            self.summary.baseline_changes = changes
            self.baseline_note = "baseline: " + ("; ".join(changes) if changes else "same setup")
        self.summary.baseline_note = self.baseline_note
        self.config.hook.pytest_quantgate_summary(config=self.config, summary=self.summary)
        # Each output on its own: a full disk or a read-only directory costs that one file,
        # with one error line, never the others or the table.
        if blessed is not None and self.baseline_path is not None:
            if self._write("baseline", self.baseline_path, lambda p: write_baseline(p, blessed)):
                self.summary.baseline_note = self.baseline_note = (
                    f"baseline NOT written: {self.baseline_path}")
        if self.report_path is not None:
            from .report import write_report

            summary = self.summary
            self._write("--quant-report", self.report_path,
                        lambda p: write_report(p, summary, self.settings))
        step = os.environ.get("GITHUB_STEP_SUMMARY")
        if step and self.summary.rows:
            markdown = render_markdown(self.summary)

            def append(p: Path) -> None:
                with open(p, "a", encoding="utf-8") as fh:
                    fh.write(markdown)

            self._write("GITHUB_STEP_SUMMARY", Path(step), append)
        if self.output_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a lost output must not look green
        if (
            self.gate == "any"
            and session.exitstatus == pytest.ExitCode.TESTS_FAILED
            and self.summary.smallest_passing is not None
            and self.other_failures == 0
        ):
            # --quant-gate=any: one passing rung is enough; failures outside variants still count.
            session.exitstatus = pytest.ExitCode.OK

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.narrowed = True

    def _bless_scope(self) -> dict[str, Any]:
        """How a bless merges into the existing baseline: a run that saw only part of the
        suite keeps every case it did not run; a full run drops cases that no longer exist.
        Cases skipped in this run are kept either way: a skip is not evidence."""
        narrowed = self.narrowed or any("::" in str(a) for a in self.config.args)
        skipped: dict[str, dict[str, list[str]]] = {}
        for c in self.cases.values():
            if c.outcome == "skipped" and c.group is not None:
                skipped.setdefault(c.variant, {}).setdefault(c.group, []).append(case_key(c.nodeid, c.variant))
        return {"keep_unseen": narrowed, "skipped": skipped}

    def _write(self, what: str, path: Path, write: Callable[[Path], None]) -> bool:
        """Run one output write; on failure keep one line for the terminal and return True."""
        try:
            write(path)
        except OSError as exc:
            self.output_errors.append(f"{what}: cannot write {path}: {exc.strerror or exc}")
            return True
        return False

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary is not None and self.summary.rows:
            terminalreporter.write_sep("=", "quantgate")
            for line in render_lines(self.summary):
                terminalreporter.write_line(line)
        for line in self.output_errors:
            terminalreporter.write_line(f"ERROR: {line}", red=True, bold=True)

    def pytest_report_header(self, config: pytest.Config) -> str:
        names = ", ".join(self.selected)
        return f"quantgate: {self.settings.config_path.name} ({self.settings.model}): {names}"


SESSION_KEY = pytest.StashKey[QuantSession]()


def _set_nodeid(item: pytest.Item, nodeid: str) -> None:
    """Rename a collected item, as xdist's loadgroup does (pytest 9 keeps ids as ``NodeId``)."""
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        path, _, rest = nodeid.partition("::")
        # The whole tail as names, no params: str() gives back exactly `nodeid`.
        item._id = NodeId(path=path, names=tuple(rest.split("::")), params=None)
    else:  # pytest < 9
        item._nodeid = nodeid  # type: ignore[attr-defined]


def _import_llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass  # a custom backend may not need it; the default one reports the problem


def _case_outcome(report: pytest.TestReport) -> str | None:
    if report.when == "setup":
        if report.failed:
            return "error"
        return "skipped" if report.skipped else None
    if report.when == "call":
        wasxfail = getattr(report, "wasxfail", None)
        if report.skipped:
            return "miss" if wasxfail is not None and wasxfail.startswith(MISS_PREFIX) else "skipped"
        return "passed" if report.passed else "failed"
    return "error" if report.failed else "passed"


def _raised_in_library(excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """The module an AssertionError came from if that is llama_cpp or this plugin: an
    ``assert`` inside them (llama-cpp-python's ``assert self.n_tokens > 0``) is a fault, not
    a wrong answer. Anything else (the test, the project's helpers, unittest's or numpy's
    assert helpers) is a check the model failed: a miss."""
    tb = excinfo.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    if not isinstance(module, str):
        return None
    top = module.split(".", 1)[0]
    if top == "llama_cpp" or (top == __name__.split(".", 1)[0] and module != f"{top}.checks"):
        return module
    return None


def _short_key(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _is_verdict(report: pytest.TestReport) -> bool:
    return f"::{MARKER}[" in report.nodeid


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


__all__ = ["MB", "QuantSession", "RubricItem", "SESSION_KEY"]
