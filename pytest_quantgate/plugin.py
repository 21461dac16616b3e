"""pytest entry point: options, fixtures and registration. Kept cheap: llama_cpp is imported
only when a model loads, so ``pytest --help`` stays fast."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from collections.abc import Mapping

import pytest

from .baseline import BaselineError, read_baseline
from .cache import ResultCache
from .config import GATES, ISOLATIONS, ConfigError, Settings, find_config, load_settings, select_variants
from .constants import MARKER, PARAM
from .model import QuantModel
from .backend import LoadError
from .repeats import without_repeat
from .rubric import RUBRIC_KEYS
from .session import SESSION_KEY, QuantSession
from .variants import BrokenVariant, Variant, check_same_model, name_from_metadata, resolve


def _gate(value: str) -> str:
    if value not in GATES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(GATES)}, got {value!r}")
    return value


def _isolation(value: str) -> str:
    if value not in ISOLATIONS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


def _variant_list(value: str) -> str:
    if not [t for t in value.split(",") if t.strip()]:
        raise argparse.ArgumentTypeError("expected a comma-separated list of variant names, e.g. Q4,Q8")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantgate", "quantgate: gate quantized GGUF variants on your own rubric")
    group.addoption("--quant-variants", metavar="LIST", type=_variant_list, default=None,
                    help="comma-separated variants to run, case-insensitive; Q4 selects Q4_0, "
                         "Q4_K_M, ... (default: all configured)")
    group.addoption("--quant-config", metavar="PATH", default=None,
                    help="config file (default: quantgate.yaml in the rootdir)")
    group.addoption("--quant-gate", metavar="all|any", type=_gate, default=None,
                    help="all: every selected variant must pass; any: the run passes if one "
                         "variant passes (default: all)")
    group.addoption("--quant-report", metavar="PATH", default=None,
                    help="write the summary and per-case results as JSON to PATH")
    group.addoption("--quant-markdown", metavar="PATH", default=None,
                    help="write the summary and each variant's flipped cases as Markdown to PATH "
                         "(under GitHub's 65,536-character comment limit: post it on the pull request)")
    group.addoption("--quant-html", metavar="PATH", default=None,
                    help="write one self-contained HTML report to PATH: the table, a disk size vs "
                         "accuracy chart, every case's transcript beside the reference's, filters")
    group.addoption("--quant-isolation", metavar="none|process", type=_isolation, default=None,
                    help="process: load each variant in a worker process, so a llama.cpp crash "
                         "fails that variant only (default: isolation: in quantgate.yaml, else none)")
    group.addoption("--quant-baseline", metavar="PATH", default=None,
                    help="baseline file to compare against (default: baseline: in quantgate.yaml, "
                         "else quantgate-baseline.json next to it)")
    group.addoption("--quant-update-baseline", action="store_true", default=False,
                    help="write this run's results as the new baseline instead of comparing")
    group.addoption("--quant-cache", metavar="DIR|off|refresh", default=None,
                    help="exact result cache of deterministic calls: a directory, off, or refresh "
                         "(recompute every call and overwrite its entry); default: cache: in "
                         "quantgate.yaml, else quantgate-results in pytest's cache dir")
    group.addoption("--quant-decide-early", action="store_true", default=False,
                    help="stop running a group's cases on a variant once its accuracy threshold "
                         "can no longer be met; the rest are skipped (default: decide_early: in "
                         "quantgate.yaml, else off; never when updating the baseline)")
    parser.addini("quantgate_config", "quantgate config file, relative to the rootdir", default=None)
    parser.addini("quant_gate", "default for --quant-gate (all|any)", default="all")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    keys = ", ".join(RUBRIC_KEYS)
    config.addinivalue_line(
        "markers",
        f"{MARKER}({keys}): thresholds for an eval group (function, class or module); each "
        "variant gets a verdict test that fails when a threshold is missed",
    )
    try:
        qs = _make_session(config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if qs is not None:
        config.stash[SESSION_KEY] = qs
        config.pluginmanager.register(qs, "quantgate-session")
        if getattr(config.option, "dist", "no") in ("load", "worksteal"):
            # xdist's default spreads one variant over all workers; group by variant instead.
            config.option.dist = "loadgroup"


def _make_session(config: pytest.Config) -> QuantSession | None:
    path = find_config(config.rootpath, config.getoption("quant_config"), config.getini("quantgate_config"))
    if path is None:
        if config.getoption("quant_variants"):
            raise ConfigError(
                f"--quant-variants: no quantgate.yaml in {config.rootpath}; add one or pass --quant-config"
            )
        return None
    cache = config.cache if hasattr(config, "cache") else None
    settings = load_settings(path, name_of=lambda p: name_from_metadata(p, cache))
    if config.getoption("quant_isolation"):
        settings = dataclasses.replace(settings, isolation=config.getoption("quant_isolation"))
    if settings.isolation == "process" and settings.fidelity_corpus is not None:
        raise ConfigError(
            f"{path.name}: fidelity.corpus conflicts with isolation: process (scoring needs the "
            "model in the test process); drop one, e.g. --quant-isolation=none"
        )
    selected = select_variants(settings.names, config.getoption("quant_variants"))
    variants: dict[str, Variant | BrokenVariant] = {}
    for spec in settings.variants:
        # Preflight only what will run: a broken unselected file must not block a run.
        # The reference is preflighted too: its hash keys its cached distributions.
        wanted = spec.name in selected or spec.name == settings.reference
        variants[spec.name] = resolve(spec, cache) if wanted else BrokenVariant(
            spec.name, spec.path, "not selected")
    mismatch = check_same_model([v for v in variants.values() if isinstance(v, Variant)])
    if mismatch:
        raise ConfigError(f"{path.name}: {mismatch}")
    gate = config.getoption("quant_gate") or _gate_from_ini(config)
    report = config.getoption("quant_report")
    flag = config.getoption("quant_baseline")
    baseline_path = Path(flag).resolve() if flag else settings.baseline_path
    update = bool(config.getoption("quant_update_baseline"))
    # The plugin never writes over its own inputs: the config, the model files, the corpus,
    # and (unless blessing) the baseline it compares against.
    inputs = {settings.config_path.resolve(): "the quantgate config",
              **{s.path.resolve(): f"variant {s.name}'s model file" for s in settings.variants}}
    if settings.fidelity_corpus is not None:
        inputs[settings.fidelity_corpus.resolve()] = "the fidelity corpus"
    outputs = {"--quant-report": report, "--quant-markdown": config.getoption("quant_markdown"),
               "--quant-html": config.getoption("quant_html")}
    report_inputs = dict(inputs)
    if baseline_path is not None:
        report_inputs[baseline_path] = "the baseline"
    for flag_name, value in outputs.items():
        if value:
            _check_output(flag_name, value, report_inputs)
    if update and baseline_path is not None:
        _check_output("--quant-baseline" if flag else "baseline", str(baseline_path), inputs)
    baseline = None
    if baseline_path is not None and baseline_path.is_file() and not update:
        try:
            baseline = read_baseline(baseline_path)
        except BaselineError as exc:
            raise ConfigError(str(exc)) from None
    elif flag and not update:
        raise ConfigError(f"--quant-baseline: {flag}: no such file; create it with --quant-update-baseline")
    return QuantSession(config, settings, variants, selected, gate,
                        Path(report).resolve() if report else None,
                        baseline_path=baseline_path, baseline=baseline, update_baseline=update,
                        cache=_result_cache(config, settings),
                        markdown_path=_path(outputs["--quant-markdown"]),
                        html_path=_path(outputs["--quant-html"]),
                        decide_early=(bool(config.getoption("quant_decide_early")) or settings.decide_early)
                        and not update)


def _path(value: str | None) -> Path | None:
    return Path(value).resolve() if value else None


def _result_cache(config: pytest.Config, settings: Settings) -> ResultCache | None:
    """``--quant-cache`` over ``cache:`` in quantgate.yaml over pytest's cache dir."""
    flag = config.getoption("quant_cache")
    if flag == "off" or (flag is None and settings.cache_off):
        return None
    mode = "refresh" if flag == "refresh" else "on"
    if flag not in (None, "refresh"):
        where, root = "--quant-cache", Path(flag).expanduser().resolve()
    elif settings.cache_dir is not None:
        where, root = f"{settings.config_path.name}: cache", settings.cache_dir
    elif hasattr(config, "cache"):  # None with -p no:cacheprovider: then no result cache
        where, root = "cache_dir", config.cache.mkdir("quantgate-results")
    else:
        return None
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{where}: {root} is a file; give a directory for the result cache")
    parent = root
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{where}: cannot write under {parent}; give a writable directory or "
                          "--quant-cache=off")
    return ResultCache(root, mode)


def _check_output(what: str, value: str, inputs: Mapping[Path, str]) -> None:
    """Refuse an output path that is one of the run's inputs or cannot be created."""
    path = Path(value).resolve()
    for known, label in inputs.items():
        if path == known or (path.exists() and known.exists() and os.path.samefile(path, known)):
            raise ConfigError(f"{what}: {value} is {label}, an input of this run; "
                              "write to another path")
    if path.is_dir():
        raise ConfigError(f"{what}: {value} is a directory; give a file path such as {value}/quantgate.json")
    parent = path.parent
    while not parent.exists():  # missing folders are created on write, like --junitxml
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"{what}: cannot write under {parent}")


def _gate_from_ini(config: pytest.Config) -> str:
    value = str(config.getini("quant_gate") or "all")
    if value not in GATES:
        raise ConfigError(f"ini quant_gate: expected one of {', '.join(GATES)}, got {value!r}")
    return value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if PARAM not in metafunc.fixturenames:
        return
    qs = metafunc.config.stash.get(SESSION_KEY, None)
    if qs is None:
        return  # the fixture reports the missing config when the test runs
    names = list(qs.selected)
    metafunc.parametrize(PARAM, names, ids=names, indirect=True)


def _session(config: pytest.Config) -> QuantSession:
    qs = config.stash.get(SESSION_KEY, None)
    if qs is None:
        pytest.fail(
            f"quant_model: no quantgate.yaml found in {config.rootpath}; create one "
            "(see the README) or pass --quant-config PATH",
            pytrace=False,
        )
    return qs


@pytest.fixture
def quant_variant(request: pytest.FixtureRequest) -> Variant:
    """The variant this test runs against (name, path, size, file type, SHA-256), not loaded."""
    qs = _session(request.config)
    name = getattr(request, "param", None)
    if name is None:
        pytest.fail("quant_variant: the test was not parametrized over variants", pytrace=False)
    variant = qs.variants[name]
    if isinstance(variant, BrokenVariant):
        pytest.fail(f"variant {variant.name}: {variant.reason}", pytrace=False)
    return variant


@pytest.fixture
def quant_repeat(request: pytest.FixtureRequest) -> int | None:
    """Which repeat of its case this test runs (``quant_rubric(repeats=N)``): 0 .. N-1, its
    sampled calls seeded seed + repeat; None when the case is not repeated."""
    r = getattr(request, "param", None)
    return int(r) if r is not None else None


@pytest.fixture
def quant_model(request: pytest.FixtureRequest, quant_variant: Variant, quant_repeat: int | None) -> QuantModel:
    """The variant's model: ``generate()``, ``chat()``, ``.variant`` and ``.llm``. Loaded now,
    or on its first call the result cache cannot answer when no gate needs live figures."""
    qs = _session(request.config)
    try:
        model = qs.pool.get(quant_variant, lazy=qs.lazy)
    except LoadError as exc:
        reason = str(exc)
    else:
        model.begin(without_repeat(request.node.nodeid, quant_repeat), quant_repeat, qs.repeats_of(request.node) if quant_repeat is not None else 1)
        return model
    pytest.fail(reason, pytrace=False)  # outside the except: no chained traceback
