"""Slice 3: format following. The output is parsed: JSON against a schema, or a regex."""

import pytest
import yaml
from pathlib import Path

from pytest_quantgate.checks import json_matching, matches

SLICE = yaml.safe_load((Path(__file__).parent / "cases" / "format.yaml").read_text())
pytestmark = pytest.mark.quant_rubric(**SLICE["rubric"])


@pytest.mark.parametrize("case", SLICE["cases"], ids=lambda c: c["id"])
def test_format(quant_model, case):
    answer = quant_model.chat(case["prompt"], max_tokens=case.get("max_tokens", 96))
    if case["check"] == "json":
        assert json_matching(answer, case["schema"], equals=case.get("equals"))
    else:
        assert matches(answer, case["pattern"])
