"""Hooks other plugins and conftest.py files can implement to extend quantgate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

import pytest

if TYPE_CHECKING:
    from .backend import LoadedModel
    from .summary import Summary
    from .variants import Variant


@pytest.hookspec(firstresult=True)
def pytest_quantgate_load_model(
    config: pytest.Config, variant: Variant, llama_kwargs: Mapping[str, Any]
) -> LoadedModel | None:
    """Load ``variant`` and return a ``LoadedModel``; the first non-None result wins.

    The session's llama.cpp backend is the default implementation (``trylast``: in process,
    or in a worker process with ``isolation: process``). A conftest can serve a variant from
    elsewhere (a server, a subprocess, a fake for fast tests)::

        def pytest_quantgate_load_model(config, variant, llama_kwargs):
            if variant.name == "REMOTE":
                return MyHttpModel(url=...)

    The object needs ``llm`` (or None), ``crashed`` (None, or the message once the place
    that holds the model died), ``memory_bytes`` (None to have this process's RSS measured,
    or the placement's own figure), ``complete``, ``chat`` and ``close``: see
    ``pytest_quantgate.backend.LoadedModel``. Raising ``pytest.skip`` skips the variant's
    tests, which then have no verdict.
    """


def pytest_quantgate_summary(config: pytest.Config, summary: Summary) -> None:
    """Called once with the finished ``Summary`` before it is printed and written.

    Modify-style: a plugin may read it (e.g. to post it to a dashboard) but should not
    change its verdicts::

        def pytest_quantgate_summary(config, summary):
            print("shipping", summary.smallest_passing)
    """
