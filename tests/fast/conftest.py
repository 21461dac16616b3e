"""Fixtures of the fast tier: a tiny GGUF ladder written once per session, and a project that
serves it from a fake backend. No test here loads a model, so none needs the model lock."""

from __future__ import annotations

import pytest

from .fake_project import FakeProject, TinyLadder, build_tiny_ladder

try:
    # The plugin imports llama_cpp in every session, fake backend or not (before the first
    # load, and for the report's environment). Imported here first, it survives pytester's
    # sys.modules restore after each in-process run; else it is re-imported by every run and
    # the /dev/null handle that llama_cpp._utils opens at import leaks as a ResourceWarning
    # (an error under filterwarnings=error). Importing it loads no model.
    import llama_cpp  # noqa: F401
except ImportError:
    pass


@pytest.fixture(scope="session")
def tiny_ladder(tmp_path_factory: pytest.TempPathFactory) -> TinyLadder:
    """F16 (0.80 MB) > Q8_0 (0.40) > Q4_K_M (0.20) > Q2_K (0.10): llama GGUFs, one tokenizer."""
    return build_tiny_ladder(tmp_path_factory.mktemp("tiny-ladder"))


@pytest.fixture
def fake(pytester: pytest.Pytester, tiny_ladder: TinyLadder) -> FakeProject:
    return FakeProject(pytester, tiny_ladder)
