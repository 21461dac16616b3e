"""Slice 2: arithmetic and simple reasoning. The number is checked, not the wording."""

import pytest
import yaml
from pathlib import Path

from pytest_quantgate.checks import number_in

SLICE = yaml.safe_load((Path(__file__).parent / "cases" / "arithmetic.yaml").read_text())
pytestmark = pytest.mark.quant_rubric(**SLICE["rubric"])


@pytest.mark.parametrize("case", SLICE["cases"], ids=lambda c: c["id"])
def test_arithmetic(quant_model, case):
    answer = quant_model.chat(case["prompt"], max_tokens=case.get("max_tokens", 48))
    assert number_in(answer, case["answer"])
