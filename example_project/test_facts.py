"""Slice 1: short factual answers. The answer must name the fact; wording is free."""

import pytest
import yaml
from pathlib import Path

from pytest_quantgate.checks import contains_any

SLICE = yaml.safe_load((Path(__file__).parent / "cases" / "facts.yaml").read_text())
pytestmark = pytest.mark.quant_rubric(**SLICE["rubric"])


@pytest.mark.parametrize("case", SLICE["cases"], ids=lambda c: c["id"])
def test_fact(quant_model, case):
    answer = quant_model.chat(case["prompt"], max_tokens=case.get("max_tokens", 48))
    assert contains_any(answer, case["expect_any"])
