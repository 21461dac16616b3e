"""Run order and model residency: tests without a variant first, then one block per variant
(reference first, then configured order), each group's verdict right after its cases; each
variant loaded once and closed before the next loads."""

from __future__ import annotations

import pytest

from .fake_project import FakeProject, dedent, run_order

MODULE_GROUP = dedent("""
    import pytest
    pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

    @pytest.mark.parametrize("word", ["alpha", "beta"])
    def test_echo(quant_model, word):
        assert quant_model.generate(word) == word
""")

FUNCTION_GROUP = dedent("""
    import pytest

    @pytest.mark.quant_rubric(accuracy=0.5)
    def test_fn(quant_model):
        assert quant_model.chat("gamma") == "gamma"

    def test_unjudged(quant_variant):
        assert quant_variant.size_bytes > 0
""")

PLAIN = dedent("""
    def test_plain():
        pass
""")


@pytest.fixture
def ordered(fake: FakeProject) -> FakeProject:
    # configured order Q2_K, Q8_0, F16, Q4_K_M with F16 as reference: F16 runs first
    fake.config(["Q2_K", "Q8_0", "F16", "Q4_K_M"], reference="F16")
    fake.script()
    fake.pytester.makepyfile(test_a=MODULE_GROUP, test_b=FUNCTION_GROUP, test_z_plain=PLAIN)
    return fake


def test_variant_blocks_in_run_order_each_group_followed_by_its_verdict(ordered: FakeProject) -> None:
    result = ordered.run("-v")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    expected = ["test_z_plain.py::test_plain"]
    for v in ("F16", "Q2_K", "Q8_0", "Q4_K_M"):
        expected += [
            f"test_a.py::test_echo[{v}-alpha]",
            f"test_a.py::test_echo[{v}-beta]",
            f"test_a.py::quant_rubric[{v}]",
            f"test_b.py::test_fn[{v}]",
            f"test_b.py::test_fn::quant_rubric[{v}]",
            f"test_b.py::test_unjudged[{v}]",
        ]
    assert [nodeid for nodeid, _ in run_order(result)] == expected
    result.stdout.fnmatch_lines(["quantgate: quantgate.yaml (tiny): F16, Q2_K, Q8_0, Q4_K_M"])


def test_each_variant_is_loaded_once_and_closed_before_the_next_loads(ordered: FakeProject) -> None:
    result, report = ordered.run_report()
    assert result.ret == pytest.ExitCode.OK
    events = ordered.events()
    residency = [e for e in events if e[0] != "call"]
    assert residency == [(what, v) for v in ("F16", "Q2_K", "Q8_0", "Q4_K_M") for what in ("load", "close")]
    # every call went to the variant resident at the time: 3 calls (alpha, beta, gamma) each
    resident = None
    calls: dict[str, int] = {}
    for what, v in events:
        if what == "load":
            resident = v
        elif what == "close":
            resident = None
        else:
            assert v == resident
            calls[v] = calls.get(v, 0) + 1
    assert calls == {"F16": 3, "Q2_K": 3, "Q8_0": 3, "Q4_K_M": 3}
    assert {v["name"]: v["loads"] for v in report["variants"]} == {
        "F16": 1, "Q2_K": 1, "Q8_0": 1, "Q4_K_M": 1}


def test_only_selected_variants_load(ordered: FakeProject) -> None:
    result, report = ordered.run_report("-v", "--quant-variants=q4,Q2")
    assert result.ret == pytest.ExitCode.OK
    # the reference is preflighted but neither run nor loaded when not selected
    assert [e for e in ordered.events() if e[0] == "load"] == [("load", "Q2_K"), ("load", "Q4_K_M")]
    ids = [nodeid for nodeid, _ in run_order(result)]
    assert ids[0] == "test_z_plain.py::test_plain"
    assert [i for i in ids if "quant_rubric" in i] == [
        "test_a.py::quant_rubric[Q2_K]", "test_b.py::test_fn::quant_rubric[Q2_K]",
        "test_a.py::quant_rubric[Q4_K_M]", "test_b.py::test_fn::quant_rubric[Q4_K_M]"]
    assert [v["name"] for v in report["variants"]] == ["Q2_K", "Q4_K_M"]  # smallest file first


def test_k_subset_gets_verdicts_only_for_groups_that_run(ordered: FakeProject) -> None:
    result = ordered.run("-v", "-k", "test_echo and Q8_0")
    assert [nodeid for nodeid, _ in run_order(result)] == [
        "test_a.py::test_echo[Q8_0-alpha]", "test_a.py::test_echo[Q8_0-beta]", "test_a.py::quant_rubric[Q8_0]"]
    assert [e for e in ordered.events() if e[0] != "call"] == [("load", "Q8_0"), ("close", "Q8_0")]


def test_a_backend_that_reports_no_memory_is_loaded_once_and_closed(fake: FakeProject) -> None:
    """``memory_bytes = None``: the backend does not measure itself (the plugin measures the
    process instead). At commit ea7c478 this failed: ``int(loaded.memory_bytes)`` ran after
    the load, outside its error handling, so every test errored with a TypeError, the
    variant was loaded again for each test and never closed."""
    fake.script(memory_mb={"Q8_0": None})
    fake.config(["Q8_0"])
    fake.pytester.makepyfile(test_a=MODULE_GROUP)
    result = fake.run()
    assert [e for e in fake.events() if e[0] != "call"] == [("load", "Q8_0"), ("close", "Q8_0")]
    assert result.ret == pytest.ExitCode.OK
