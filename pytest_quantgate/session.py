"""``QuantSession``: the one owner of a run's state. Built in ``pytest_configure``, kept in
``config.stash`` and registered as a plugin, so its hooks are methods; each delegates.

Data flows one way: configuration and variants (``plugin``) -> collection (``collection``)
-> measuring: calls, memory and fidelity recorded as plain data (``pool``, ``outcomes``,
``reference``) -> judging, pure (``judge``) -> outputs (``summary``, ``render``, ``outputs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from .collection import Arranged, Group, Groups, RubricItem, arrange, parametrize_repeats, repeat_of, variant_of
from .config import Settings
from .cache import FORMAT as CACHE_FORMAT, ResultCache, llama_build
from .constants import CASE_PROP, PARAM, VARIANT_PROP, VERDICT_PROP
from .early import EarlyDecisions
from .judge import Evidence, judge, outcomes, undecided, unjudged
from .measure import CallTotals
from .outcomes import case_record, is_verdict, mark_miss
from .outputs import baseline_step, write_outputs
from .backend import LoadError
from .pool import ModelPool
from .records import CaseRecord, Verdict, case_key
from .repeats import REPEAT_FIXTURE, aggregate
from .reference import ReferenceScores
from .render import render_lines
from .report import environment, run_record
from .summary import Summary, build_summary
from .variants import BrokenVariant, Variant, memory_refusal


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
        cache: ResultCache | None = None,
        decide_early: bool = False,
        markdown_path: Path | None = None,
        html_path: Path | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.variants = variants  # every configured variant, preflighted
        self.selected = selected  # names in run order
        self.gate = gate
        self.report_path = report_path
        self.markdown_path = markdown_path
        self.html_path = html_path
        self.baseline_path = baseline_path
        self.baseline = baseline  # the one compared against; None when absent or being rewritten
        self.update_baseline = update_baseline
        seed = settings.llama.get("seed")
        n_ctx = settings.llama.get("n_ctx")
        self.cache = cache
        xdist = hasattr(config, "workerinput") or config.getoption("dist", "no") != "no"
        self.early = EarlyDecisions(settings.reference, reorder=not xdist) if decide_early else None
        self.lazy = False  # load on the first uncached call; set at collection (no live gate)
        self.pool = ModelPool(self._load, settings.generation, seed if isinstance(seed, int) else None,
                              prepare=_import_llama_cpp,
                              n_ctx=n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None,
                              cache=cache, cache_context=self._cache_context)
        self.pool.progress = self._progress
        self.groups = Groups(settings.rubric_defaults, settings.isolation)
        self.arranged = Arranged({}, {})
        self.reference = ReferenceScores(settings, variants, config)
        self.cases: dict[str, CaseRecord] = {}  # nodeid -> final outcome
        self.fidelity: dict[tuple[str, str], tuple[dict[str, Any] | None, str | None]] = {}
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.variant_snapshots: dict[str, dict[str, Any]] = {}
        self.other_failures = 0  # failures in tests that are not about a variant
        self.narrowed = False  # -k, -m, --deselect, --lf: the run saw a subset
        self.summary: Summary | None = None
        self.output_errors: list[str] = []  # outputs that could not be written, one line each

    # -- loading: the session chooses the placement -------------------------------------------
    def _load(self, variant: Variant) -> Any:
        refusal = memory_refusal(variant, self.settings.llama,
                                 [g.rubric.memory_mb for g in self.groups.by_key.values()],
                                 psutil.virtual_memory().available)
        if refusal is not None:
            raise MemoryError(refusal)
        loaded = self.config.hook.pytest_quantgate_load_model(
            config=self.config, variant=variant, llama_kwargs=self.settings.llama
        )
        if loaded is None:
            raise RuntimeError("no backend returned a model (pytest_quantgate_load_model)")
        return loaded

    @pytest.hookimpl(trylast=True)
    def pytest_quantgate_load_model(self, config: pytest.Config, variant: Variant,
                                    llama_kwargs: Mapping[str, Any]) -> Any:
        """The default backend: llama-cpp-python, in this process or in a worker process."""
        if self.settings.isolation == "process":
            from .worker import WorkerBackend

            return WorkerBackend(timeout=self.settings.call_timeout).load(variant, llama_kwargs=llama_kwargs)
        from .backend import LlamaCppBackend

        return LlamaCppBackend().load(variant, llama_kwargs=llama_kwargs)

    def _cache_context(self, variant: Variant) -> dict[str, Any]:
        """What keys every answer of ``variant`` besides the request itself."""
        impls = self.config.hook.pytest_quantgate_load_model.get_hookimpls()
        return {"format": CACHE_FORMAT, "model_sha256": variant.sha256, "llama": dict(self.settings.llama),
                "llama_cpp": llama_build(),
                # a custom backend answers differently from llama-cpp-python: keyed apart
                "backend": [f"{i.function.__module__}.{i.function.__qualname__}" for i in impls]}

    def _progress(self, text: str, done: bool) -> None:
        """A model load, on its own line: loads take seconds on real models and the dots
        would otherwise stall. Nothing with -q, nothing from xdist workers (no terminal)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or self.config.get_verbosity() < 0 or hasattr(self.config, "workerinput"):
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        # loads happen inside a test's setup, under output capture: suspended, as pytest's own
        # live logging does, or the line would land in the test's captured output
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            if not done:
                if text.startswith("quantgate: "):
                    tr.ensure_newline()
                tr.write(text, flush=True)
                return
            tr.write(text + "\n", flush=True)
            tr.currentfspath = -2  # pytest's own way to re-print the file name before the next dot

    # -- collection ------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)  # after every other parametrization: the repeat is the
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:  # innermost, last id part
        """``quant_rubric(repeats=N)``: each case becomes N items, one per repeat, next to
        each other (``test_x[Q4_K_M-case-rep0]`` ... ``-rep7]``)."""
        if PARAM in metafunc.fixturenames and REPEAT_FIXTURE in metafunc.fixturenames:
            parametrize_repeats(metafunc, self.settings.rubric_defaults)

    def repeats_of(self, item: pytest.Item) -> int:
        group = self.groups.of(item)
        return group.rubric.n_repeats if group is not None else 1

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection, so verdicts match what runs
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        self.arranged = arrange(config, items, self.selected, self.groups, self.judge)
        rubrics = [g.rubric for g in self.groups.by_key.values()]
        if any(r.needs_probe for r in rubrics):
            self.pool.probe_repeats = self.settings.probe_repeats
        # Speed, memory and fidelity are measured live on every run: with such a gate every
        # variant loads (and is probed) even when the cache answers all of its calls.
        self.lazy = (self.cache is not None and self.cache.mode == "on"
                     and self.settings.fidelity_corpus is None and not any(r.needs_live for r in rubrics))
        if self.early is not None:
            self.early.collected(items, self.arranged)
        self._check_baseline_comparable(list(self.arranged.last_case))
        if (self.settings.rubric_defaults.thresholds() and not self.groups.by_key
                and any(variant_of(it) is not None for it in items)):
            import warnings

            warnings.warn(pytest.PytestConfigWarning(
                f"{self.settings.config_path.name}: rubric: thresholds are set but no test has a "
                "quant_rubric marker, so nothing is judged; mark your eval modules with "
                "pytestmark = pytest.mark.quant_rubric()"), stacklevel=1)

    def _check_baseline_comparable(self, pairs: list[tuple[str, str]]) -> None:
        if self.baseline is None or not pairs:
            return
        known = {(g, v) for v, data in self.baseline["variants"].items() for g in data.get("groups", {})}
        if not known & set(pairs):
            raise pytest.UsageError(
                f"{self.baseline_path}: nothing in this run is comparable to the baseline (no "
                "variant and eval group in common); write a new one with pytest --quant-update-baseline"
            )

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.narrowed = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: tell workers that we switched scheduling to loadgroup."""
        if self.config.getoption("dist", "no") == "loadgroup":
            node.workerinput["quantgate_loadgroup"] = True

    # -- measuring -------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.pool.current_test = item.nodeid
        if self.early is not None and not isinstance(item, RubricItem):
            why = self.early.before(item, self.arranged, self.groups, self.cases.values(), self._refused)
            if why is not None:  # reported at the test's own location, like a skip marker
                raise pytest.skip.Exception(why, _use_item_location=True)

    def _refused(self, variant: str) -> str | None:
        v = self.variants[variant]
        return v.reason if isinstance(v, BrokenVariant) else self.pool.load_failure(variant)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        variant = variant_of(item)
        if variant is None:
            return
        group = self.arranged.item_group.get(item.nodeid)
        if group is not None and self.arranged.last_case.get((group, variant)) == item.nodeid:
            self._measure_fidelity(self.groups.by_key[group], variant)
        if nextitem is None or variant_of(nextitem) != variant:
            self.pool.release()  # the variant's block is over: free it before the next loads

    def _measure_fidelity(self, group: Group, variant: str) -> None:
        """After a group's last case, while its variant is resident: record its fidelity."""
        if not (group.rubric.needs_fidelity or self.settings.fidelity_corpus is not None):
            return
        v = self.variants[variant]
        failure = self.pool.load_failure(variant)
        if any(map(undecided, self._cases(group.key, variant))):
            self.fidelity[(group.key, variant)] = (None, "not measured: the verdict was decided early")
            return
        if not isinstance(v, Variant) or failure is not None or self.pool.resident != variant:
            self.fidelity[(group.key, variant)] = (None, failure or f"{variant} was not loaded")
            return
        try:
            model = self.pool.get(v)  # resident: no load, but a dead worker is reported
        except LoadError as exc:
            self.fidelity[(group.key, variant)] = (None, str(exc))
            return
        self.fidelity[(group.key, variant)] = self.reference.measure(
            group.key, variant, model.llm, self._cases(group.key, variant),
            self.pool.test_prompts, self.pool.test_tokens)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        variant = variant_of(item)
        group = self.arranged.item_group.get(item.nodeid)
        if variant is not None and not isinstance(item, RubricItem) and call.when == "setup":
            rubric = self.groups.by_key[group].rubric if group is not None else None
            item.user_properties.append((CASE_PROP, {
                "variant": variant, "group": group, "repeat": repeat_of(item),
                "pass_rate": rubric.pass_rate if rubric else 1.0, "n_repeats": rubric.n_repeats if rubric else 1}))
        if variant is not None and call.when == "teardown" and variant in self.pool.stats:
            item.user_properties.append((VARIANT_PROP, self.pool.stats[variant].to_dict()))
        outcome = yield
        report = outcome.get_result()
        if group is not None and self.groups.by_key[group].rubric.counts_misses:
            mark_miss(call, report)
        if variant is not None and call.when == "call" and not isinstance(item, RubricItem):
            # an attribute, not a user property: it travels to an xdist controller with the
            # report but stays out of JUnit XML, which would print every transcript
            report.quantgate_calls = self.pool.test_calls.get(item.nodeid, [])

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.other_failures += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not hasattr(self.config, "workerinput"):
            # The "@variant" suffix exists only to steer xdist's loadgroup scheduler; pytest 9
            # re-parses ids with it as "test_v[Q4_K_M-1]@Q4_K_M]" (a stray bracket in JUnit and
            # terminal ids). Reports reach the rest of the controller without it.
            for xgroup in (*self.selected, "quantgate"):
                if report.nodeid.endswith(f"]@{xgroup}"):
                    report.nodeid = report.nodeid[: -len(xgroup) - 1]
                    break
        props: dict[str, Any] = dict(report.user_properties)  # our values are plain dicts
        if VARIANT_PROP in props:
            snap = props[VARIANT_PROP]
            self.variant_snapshots[snap["name"]] = snap
        if VERDICT_PROP in props and report.when == "call":
            verdict = Verdict.from_dict(props[VERDICT_PROP])
            verdict.passed = report.passed
            self.verdicts[(verdict.group, verdict.variant)] = verdict
            return
        case = props.get(CASE_PROP)
        if case is None:
            # a verdict's own failure is about its variant; anything else (a module fixture's
            # teardown error landing on a verdict item, a plain test) fails the run regardless
            if report.failed and not (is_verdict(report) and report.when == "call"):
                self.other_failures += 1
            return
        previous = self.cases.get(report.nodeid)
        record = case_record(report, case, previous)
        if record is not None:
            calls = getattr(report, "quantgate_calls", None)
            if isinstance(calls, list):
                record = dataclasses.replace(record, calls=tuple(calls))
            elif previous is not None:  # a teardown error keeps the calls the test made
                record = dataclasses.replace(record, calls=previous.calls)
            self.cases[report.nodeid] = record

    # -- judging ----------------------------------------------------------------------------
    def _cases(self, group: str, variant: str) -> list[CaseRecord]:
        """The group's items on ``variant``, one record per repeat (what fidelity scores)."""
        return [c for c in self.cases.values() if c.group == group and c.variant == variant]

    def _judged(self, group: str, variant: str) -> list[CaseRecord]:
        """The group's cases on ``variant``, each case's repeats folded into one record."""
        return self.records(self._cases(group, variant))

    def records(self, cases: list[CaseRecord] | None = None) -> list[CaseRecord]:
        """Case records as judged: a case run over repeats is one record."""
        return aggregate(list(self.cases.values()) if cases is None else cases)

    def judge(self, group: Group, variant: str) -> Verdict:
        """The verdict test's body: gather what was recorded, judge it (never lose it)."""
        cases = self._judged(group.key, variant)
        try:
            return judge(group.key, variant, group.rubric, self._evidence(group, variant, cases))
        except Exception as exc:  # never lose the verdict: record it as a failed one
            return unjudged(group.key, variant, group.rubric, cases,
                            f"could not evaluate the rubric: {type(exc).__name__}: {exc}")

    def _evidence(self, group: Group, variant_name: str, cases: list[CaseRecord]) -> Evidence:
        variant = self.variants[variant_name]
        stats = self.pool.stats.get(variant_name)
        calls = CallTotals()
        for c in self._cases(group.key, variant_name):  # per item: totals are kept by node id
            t = self.pool.test_totals.get(c.nodeid)
            if t is not None:
                calls.merge(t)
        base = self._baseline_cases(variant_name, group.key)
        blessed = self._baseline_group(variant_name, group.key) or {}
        blessed_variant: dict[str, Any] = (self.baseline or {}).get("variants", {}).get(variant_name, {})
        ref = self.settings.reference
        ref_cases, source = None, "this run"
        if ref is not None and group.rubric.max_drop_vs_reference is not None:
            ref_cases = outcomes(self._judged(group.key, ref), ref) if ref in self.selected else {}
            if not ref_cases and self.baseline is not None:
                ref_cases, source = self._baseline_cases(ref, group.key) or {}, "the baseline"
        ref_stats = self.pool.stats.get(ref) if ref is not None else None
        fidelity, fidelity_missing = self.fidelity.get((group.key, variant_name), (None, None))
        if fidelity is None and fidelity_missing is None and group.rubric.needs_fidelity:
            fidelity_missing = "no fidelity was measured (the group's last case did not run)"
        return Evidence(
            cases=cases, calls=calls,
            memory_mb=stats.memory_mb if stats else None,
            load_seconds=stats.load_seconds if stats else None,
            disk_mb=variant.size_mb if isinstance(variant, Variant) else 0.0,
            broken=variant.reason if isinstance(variant, BrokenVariant) else None,
            not_loaded=self.pool.load_failure(variant_name),
            baseline_cases=base, reference=ref,
            baseline_thresholds=blessed.get("thresholds"),
            baseline_accuracy_bound=blessed.get("accuracy_bound", "point"),
            baseline_speed=blessed_variant.get("speed"),
            baseline_memory_mb=blessed_variant.get("memory_mb"), compared=self.baseline is not None,
            baseline_reference=self.baseline.get("reference") if self.baseline else None,
            narrowed=self._narrowed(),
            probe=stats.probe if stats else None,
            reference_probe=ref_stats.probe if ref_stats else None,
            reference_memory_mb=ref_stats.memory_mb if ref_stats else None, reference_cases=ref_cases, reference_source=source,
            fidelity=fidelity, fidelity_missing=fidelity_missing,
        )

    def _baseline_group(self, variant: str, group: str) -> dict[str, Any] | None:
        if self.baseline is None:
            return None
        entry: dict[str, Any] | None = self.baseline["variants"].get(variant, {}).get("groups", {}).get(group)
        return entry

    def _baseline_cases(self, variant: str, group: str) -> dict[str, str] | None:
        entry = self._baseline_group(variant, group)
        return None if entry is None else dict(entry["cases"])

    # -- the end ---------------------------------------------------------------------------
    def build(self, incomplete: bool, records: list[CaseRecord]) -> Summary:
        info: dict[str, dict[str, Any]] = {}
        for name in self.selected:
            v = self.variants[name]
            d = v.to_dict() if isinstance(v, Variant) else {"name": v.name, "path": str(v.path), "size_bytes": 0}
            d["stats"] = self._stats(name)
            info[name] = d
        return build_summary(variants=info, cases=records, verdicts=self.verdicts,
                             gate=self.gate, incomplete=incomplete, environment=environment(self.settings),
                             reference=self.settings.reference)

    def _stats(self, name: str) -> dict[str, Any]:
        return self.variant_snapshots.get(name) or (
            self.pool.stats[name].to_dict() if name in self.pool.stats else {})

    def _narrowed(self) -> bool:
        """The run saw part of the suite on purpose (-k, -m, --deselect, --lf, node ids)."""
        return self.narrowed or any("::" in str(a) for a in self.config.args)

    def _bless_scope(self, records: list[CaseRecord]) -> dict[str, Any]:
        """How a bless merges into the existing baseline: a run that saw only part of the
        suite keeps every case it did not run; a full run drops cases that no longer exist.
        Cases skipped in this run are kept either way: a skip is not evidence."""
        narrowed = self._narrowed()
        skipped: dict[str, dict[str, list[str]]] = {}
        for c in records:
            if c.outcome == "skipped" and c.group is not None:
                skipped.setdefault(c.variant, {}).setdefault(c.group, []).append(case_key(c.nodeid, c.variant))
        return {"keep_unseen": narrowed, "skipped": skipped}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.pool.release()
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller builds the summary from our reports
        # Ctrl-C, -x / --maxfail, or a plugin asking to stop: the figures cover part of the run.
        interrupted = (exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop)
                       or bool(session.shouldfail))
        records = self.records()  # each repeated case folded once, for every output
        self.summary = summary = self.build(incomplete=interrupted, records=records)
        step = baseline_step(summary, records, self.settings,
                             path=self.baseline_path, compared=self.baseline,
                             update=self.update_baseline, interrupted=interrupted,
                             scope=self._bless_scope(records))
        summary.baseline_note, summary.baseline_changes = step.note, step.changes
        self.config.hook.pytest_quantgate_summary(config=self.config, summary=summary)
        self.output_errors = write_outputs(summary, self.settings, step, baseline_path=self.baseline_path,
                                           report_path=self.report_path, markdown_path=self.markdown_path,
                                           html_path=self.html_path,
                                           run=run_record(self.variants, {n: self._stats(n) for n in self.selected},
                                                          self.other_failures))
        if self.output_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a lost output must not look green
        if (
            self.gate == "any"
            and session.exitstatus == pytest.ExitCode.TESTS_FAILED
            and summary.smallest_passing is not None
            and self.other_failures == 0
            and not self.output_errors
        ):
            # --quant-gate=any: one passing rung is enough; failures outside variants still count.
            session.exitstatus = pytest.ExitCode.OK

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary is not None and self.summary.rows:
            terminalreporter.write_sep("=", "quantgate")
            for line in render_lines(self.summary):
                terminalreporter.write_line(line)
        for line in self.output_errors:
            terminalreporter.write_line(f"ERROR: {line}", red=True, bold=True)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        names = ", ".join(self.selected)
        lines = [f"quantgate: {self.settings.config_path.name} ({self.settings.model}): {names}"]
        cache = "off" if self.cache is None else f"{self.cache.root}" + (
            " (refresh)" if self.cache.mode == "refresh" else "")
        lines.append(f"quantgate: result cache {cache}" + ("; decide early" if self.early is not None else ""))
        return lines


SESSION_KEY = pytest.StashKey[QuantSession]()


def _import_llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass  # a custom backend may not need it; the default one reports the problem
