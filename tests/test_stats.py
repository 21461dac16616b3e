"""Statistics checked against independent computations: scipy and published values."""

from __future__ import annotations

import pytest
import scipy.stats as scipy_stats  # the independent reference: test extras only

from pytest_quantgate.baseline import fingerprint_changes
from pytest_quantgate.records import case_key
from pytest_quantgate.stats import compare_group
from pytest_quantgate.stats import mcnemar_exact, min_discordant_for_significance, paired, wilson



@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (31, 50), (49, 50), (17, 23), (0, 1)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_published_value() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662
    lo, hi = wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 0), (6, 0), (3, 9), (10, 10), (2, 14), (40, 25)])
def test_exact_mcnemar_matches_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_fewest_discordant_cases_for_significance() -> None:
    # 2 * 0.5**6 = 0.031 < 0.05 but 2 * 0.5**5 = 0.0625: six one-way flips are needed
    assert min_discordant_for_significance(0.05) == 6


def test_paired_comparison_and_power_warning() -> None:
    ref = {f"c{i}": True for i in range(12)}
    var = dict(ref, c0=False, c1=False)
    cmp = paired(ref, var, gated_drop=0.05)
    assert (cmp.cases, cmp.lost, cmp.gained) == (12, 2, 0)
    assert cmp.drop == pytest.approx(2 / 12)
    assert cmp.p_value == pytest.approx(0.5)
    assert cmp.underpowered  # 12 cases * 0.05 < 6 discordant cases
    big = {f"c{i}": True for i in range(200)}
    assert not paired(big, big, gated_drop=0.05).underpowered


def test_case_keys_drop_the_variant() -> None:
    assert case_key("t.py::test_fact[Q4_K_M-capital-peru]", "Q4_K_M") == "t.py::test_fact[capital-peru]"
    assert case_key("t.py::test_fact[Q4_K_M]", "Q4_K_M") == "t.py::test_fact"
    assert case_key("t.py::test_fact[x-Q2_K]@Q2_K", "Q2_K") == "t.py::test_fact[x]"


def test_compare_group_flips_and_case_set_changes() -> None:
    before = {"a": "passed", "b": "passed", "c": "miss", "gone": "passed"}
    now = {"a": "passed", "b": "miss", "c": "passed", "new": "miss"}
    cmp = compare_group(before, now)
    assert cmp.regressions == ["b"] and cmp.fixes == ["c"]
    assert cmp.added == ["new"] and cmp.removed == ["gone"]
    assert cmp.common == 3 and cmp.drop == 0.0


def test_fingerprint_changes_are_named() -> None:
    old = {"llama_cpp_python": "0.3.35", "files": {"Q4_K_M": "aa", "F16": "bb"}, "llama": {"n_ctx": 512}}
    new = {"llama_cpp_python": "0.3.36", "files": {"Q4_K_M": "cc", "F16": "bb"}, "llama": {"n_ctx": 512}}
    assert fingerprint_changes(old, new) == ["llama-cpp-python 0.3.35 -> 0.3.36", "Q4_K_M file changed"]
