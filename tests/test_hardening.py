"""Regression tests for the defects found by trying to break the gate (issue: "A gate that never
passes wrongly"). Each runs pytest like a user, on the real ladder, and failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from quantgate_project import Project


def _write_config(project: Project, variants: dict[str, str], **extra: object) -> None:
    data = {"variants": {n: str(project.ladder.files[t]) for n, t in variants.items()},
            "llama": {"n_ctx": 512, "n_threads": 2, "seed": 0}, **extra}
    (project.path / "quantgate.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                                 encoding="utf-8")


# -- 2. stale reference distributions ---------------------------------------------------------
FID = """
import pytest
pytestmark = pytest.mark.quant_rubric(max_kld=5.0)
def test_talk(quant_model):
    assert quant_model.chat("{prompt}", max_tokens=12) is not None
"""


def test_changed_prompt_never_uses_the_stale_reference_distributions(project: Project) -> None:
    project.config(["F16", "Q2_K"], reference="F16")
    cache = project.path / "own-cache"
    project.pytester.makepyfile(test_fid=FID.format(prompt="Name a colour."))
    first = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}")
    first.assert_outcomes(passed=4)
    # The same test, reference unselected: the cached distributions are used.
    again = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}", "--quant-variants=Q2")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["Q2_K test_fid.py fidelity vs F16: mean KLD * positions)"])
    # The prompt changes (same test name, same case key): the cached data no longer describes it.
    project.pytester.makepyfile(test_fid=FID.format(prompt="Name a fruit."))
    stale = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}", "--quant-variants=Q2")
    stale.assert_outcomes(passed=1, failed=1)
    stale.stdout.fnmatch_lines(["*fidelity: reference F16 did not run in this session and no cached "
                                "distributions match this setup for test_fid.py*"])


def test_prompts_from_data_files_are_checked_against_the_reference(project: Project) -> None:
    """The test module is unchanged but its prompts come from a data file that changed: the
    first prompt of each case is compared with the one the reference was scored on."""
    project.config(["F16", "Q2_K"], reference="F16")
    cache = project.path / "own-cache"
    data = project.path / "prompts.json"
    data.write_text(json.dumps(["Name a colour.", "Count to three."]))
    project.pytester.makepyfile(test_fid=textwrap.dedent("""
        import json, pathlib, pytest
        pytestmark = pytest.mark.quant_rubric(max_kld=5.0)
        PROMPTS = json.loads((pathlib.Path(__file__).parent / "prompts.json").read_text())
        @pytest.mark.parametrize("i", range(len(PROMPTS)))
        def test_talk(quant_model, i):
            assert quant_model.chat(PROMPTS[i], max_tokens=12) is not None
    """))
    project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}").assert_outcomes(passed=6)
    data.write_text(json.dumps(["Name a colour.", "Count to ten, slowly."]))
    stale = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}", "--quant-variants=Q2")
    stale.assert_outcomes(passed=2, failed=1)
    stale.stdout.fnmatch_lines(["*the F16 distributions are stale: the prompt of 1 case(s) changed "
                                "since they were scored (e.g. test_fid.py::test_talk[[]1[]]); run once "
                                "with F16 selected*"])


# -- 3. stop strings ----------------------------------------------------------------------------
@pytest.mark.parametrize("isolation", ["none", "process"])
def test_a_stop_string_is_one_string_not_its_characters(project: Project, isolation: str) -> None:
    project.config(["Q8_0"], isolation=isolation)
    project.pytester.makepyfile(textwrap.dedent("""
        def test_stop(quant_model):
            prompt = "Question: What is 2+2?\\nAnswer:"
            as_string = quant_model.generate(prompt, max_tokens=24, stop="\\nQuestion:")
            as_list = quant_model.generate(prompt, max_tokens=24, stop=["\\nQuestion:"])
            assert as_string == as_list
            assert len(as_string.strip()) > 1, repr(as_string)
    """))
    project.run().assert_outcomes(passed=1)


# -- 4. memory is the model's, whatever ran first ------------------------------------------------
MEMORY_TEST = """
import functools
import numpy as np
import pytest
pytestmark = pytest.mark.quant_rubric()

@functools.lru_cache(maxsize=None)
def dataset():
    return np.ones(150_000_000 // 8)  # 150 MB, touched: a lazily loaded eval set

def test_uses_data(quant_model):
    assert dataset().sum() > 0
    assert quant_model.generate("1, 2, 3,", max_tokens=4)
"""


def test_memory_does_not_depend_on_order_or_on_test_code(project: Project) -> None:
    project.pytester.makepyfile(MEMORY_TEST)
    figures = []
    for order in (["Q4_K_M", "Q2_K"], ["Q2_K", "Q4_K_M"]):
        _write_config(project, {n: n for n in order})
        _, report = project.run_report()
        figures.append({v["name"]: v["memory_mb"] for v in report["variants"]})
    first, swapped = figures
    for name in ("Q4_K_M", "Q2_K"):
        # before: the first variant carried the 150 MB (Q4_K_M 301 MB, then Q2_K 320 MB)
        assert abs(first[name] - swapped[name]) < 40, figures
        assert first[name] < 250 and swapped[name] < 250, figures


# -- 5. an AssertionError from inside llama_cpp is a fault, not a miss ---------------------------
def test_an_assertion_inside_llama_cpp_is_an_error_not_a_miss(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.3)
        def test_raw(quant_model):
            quant_model.llm.create_completion("", max_tokens=2)  # llama_cpp: assert self.n_tokens > 0
        def test_miss(quant_model):
            assert quant_model.generate("1, 2, 3,", max_tokens=2) == "never"
        def test_ok(quant_model):
            assert quant_model.generate("1, 2, 3,", max_tokens=2)
    """))
    result, report = project.run_report("-rx")
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*AssertionError raised inside llama_cpp.llama: counted as a failure, not a miss*"])
    row = report["variants"][0]
    assert row["passed"] is False
    assert row["failed_tests"] == ["test_an_assertion_inside_llama_cpp_is_an_error_not_a_miss.py::test_raw[Q2_K]"]


def test_empty_prompt_is_a_clear_failure(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)
        def test_empty(quant_model):
            assert quant_model.generate("")
    """))
    result = project.run()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["quant_model.generate: expected a non-empty prompt string, got ''"])
    assert "llama_cpp" not in result.stdout.str()


# -- 6. the memory guard is a true floor, and its refusal is the reason everywhere --------------
def test_memory_guard_floor_does_not_refuse_a_variant_that_fits(project: Project) -> None:
    _write_config(project, {"Q2_K": "Q2_K"}, llama={"n_ctx": 8192, "n_batch": 8192, "n_threads": 2, "seed": 0},
                  rubric={"memory_mb": 450})
    project.pytester.makepyfile("import pytest\npytestmark = pytest.mark.quant_rubric()\n"
                                "def test_use(quant_model):\n    assert quant_model.generate('1, 2,', max_tokens=2)\n")
    result, report = project.run_report()
    result.assert_outcomes(passed=2)  # used to be refused: "needs at least 1,888 MB"
    from pytest_quantgate.variants import estimate_memory_bytes, resolve
    from pytest_quantgate.config import VariantSpec

    variant = resolve(VariantSpec("Q2_K", project.ladder.files["Q2_K"]))
    floor = estimate_memory_bytes(variant, {"n_ctx": 8192, "n_batch": 8192}) / 1e6  # type: ignore[arg-type]
    assert floor <= report["variants"][0]["memory_mb"] <= 450


def _slice(rubric: str) -> str:
    """An eval module of one generating case under ``quant_rubric(rubric)``."""
    return (f"import pytest\npytestmark = pytest.mark.quant_rubric({rubric})\n"
            "def test_case(quant_model):\n    assert quant_model.generate('1, 2,', max_tokens=2)\n")


def test_one_tight_slice_does_not_block_the_others(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(test_tight=_slice("accuracy=0.5, memory_mb=60"),
                                test_loose=_slice("accuracy=0.5"))
    result, report = project.run_report()
    result.assert_outcomes(passed=3, failed=1)
    groups = report["variants"][0]["groups"]
    assert groups["test_loose.py"]["passed"] is True
    assert groups["test_tight.py"]["reasons"][0].startswith("memory ")  # the measured figure, not 0/1


def test_a_refused_variant_shows_the_refusal_in_every_group(project: Project) -> None:
    project.config(["F16", "Q2_K"])
    project.pytester.makepyfile(test_a=_slice("accuracy=0.5, memory_mb=30"),
                                test_b=_slice("accuracy=0.5, memory_mb=80"))
    result, report = project.run_report()
    f16 = [v for v in report["variants"] if v["name"] == "F16"][0]
    for group in f16["groups"].values():
        assert group["reasons"] == [f16["groups"]["test_a.py"]["reasons"][0]]
        assert "over 3x the loosest memory_mb 80 of its groups; not loaded" in group["reasons"][0]
    assert "accuracy 0.00" not in result.stdout.str()


# -- 8, 18. output paths -------------------------------------------------------------------------
@pytest.mark.parametrize("target,label", [("quantgate-baseline.json", "the baseline"),
                                          ("quantgate.yaml", "the quantgate config")])
def test_report_path_that_is_an_input_is_refused(project: Project, target: str, label: str) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("def test_x(quant_model):\n    pass\n")
    project.run("--quant-update-baseline").assert_outcomes(passed=1)
    before = (project.path / target).read_bytes()
    result = project.run(f"--quant-report={target}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --quant-report: {target} is {label}, an input of this run; "
                                 "write to another path"])
    assert (project.path / target).read_bytes() == before


def test_report_in_a_missing_folder_is_created(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("def test_x(quant_model):\n    pass\n")
    result = project.run("--quant-report=reports/ci/quantgate.json")
    result.assert_outcomes(passed=1)
    assert json.loads((project.path / "reports/ci/quantgate.json").read_text())["variants"]


# -- 10. the sha256 pin cannot be bypassed by restoring an mtime --------------------------------
def test_pinned_file_changed_in_place_with_restored_mtime_is_refused(project: Project) -> None:
    model = project.path / "m.gguf"
    shutil.copyfile(project.ladder.files["Q2_K"], model)
    from pytest_quantgate.gguf_info import sha256_file

    pin = sha256_file(model)
    (project.path / "quantgate.yaml").write_text(yaml.safe_dump(
        {"variants": {"Q2_K": {"path": "m.gguf", "sha256": pin}}, "llama": {"n_ctx": 256}}))
    project.pytester.makepyfile("def test_x(quant_variant):\n    assert quant_variant.sha256\n")
    project.run().assert_outcomes(passed=1)  # hashed and cached
    st = model.stat()
    with model.open("r+b") as fh:  # one byte deep in the tensor data, same size
        fh.seek(st.st_size - 4096)
        b = fh.read(1)
        fh.seek(st.st_size - 4096)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # what touch -r, cp -p, rsync -a do
    result = project.run("-rE")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*variant Q2_K: m.gguf: SHA-256 * does not match the pinned *"])


def test_unpinned_file_changed_with_restored_mtime_shows_its_new_hash(project: Project) -> None:
    model = project.path / "m.gguf"
    shutil.copyfile(project.ladder.files["Q2_K"], model)
    (project.path / "quantgate.yaml").write_text(yaml.safe_dump({"variants": {"Q2_K": "m.gguf"}}))
    project.pytester.makepyfile("def test_x(quant_variant):\n    print('SHA', quant_variant.sha256)\n")
    first = project.run("-s")
    st = model.stat()
    with model.open("r+b") as fh:
        fh.seek(st.st_size - 4096)
        b = fh.read(1)
        fh.seek(st.st_size - 4096)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = project.run("-s")
    from pytest_quantgate.gguf_info import sha256_file

    assert f"SHA {sha256_file(model)}" in second.stdout.str()
    assert f"SHA {sha256_file(model)}" not in first.stdout.str()


def test_a_corrupt_file_cache_entry_is_a_miss(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("def test_x(quant_variant):\n    assert quant_variant.info.n_vocab\n")
    project.run().assert_outcomes(passed=1)
    entries = list((project.cache / "v" / "quantgate" / "files").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert files
    saved = {p: p.read_bytes() for p in files}
    try:
        for i, p in enumerate(files):
            p.write_text(['{"stamp": 1}', "[]", '{"stamp": null, "info": 3, "sha256": []}'][i % 3])
        result = project.run()
        result.assert_outcomes(passed=1)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


# -- 12. a full disk costs one output, with one line ---------------------------------------------
@pytest.fixture
def full_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real full filesystem: a tiny tmpfs, filled up (needs root, which CI has)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a full tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        with open(mnt / "filler", "wb") as fh:
            try:
                fh.write(b"x" * 128 * 1024)
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_report_on_a_full_disk_is_one_error_line_and_nothing_else_lost(project: Project, full_disk: Path) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("import pytest\npytestmark = pytest.mark.quant_rubric()\n"
                                "def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    result = project.run(f"--quant-report={full_disk}/quantgate.json", "--quant-update-baseline")
    result.stdout.fnmatch_lines([
        "*= quantgate =*",
        "baseline written: *quantgate-baseline.json",
        "Q2_K * pass",
        "smallest passing variant: Q2_K *",
        f"ERROR: --quant-report: cannot write {full_disk}/quantgate.json: No space left on device",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no temp file left
    assert json.loads((project.path / "quantgate-baseline.json").read_text())["variants"]


def test_baseline_on_a_full_disk_does_not_lose_the_report(project: Project, full_disk: Path) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    result, report = project.run_report(f"--quant-baseline={full_disk}/b.json", "--quant-update-baseline")
    result.stdout.fnmatch_lines([f"ERROR: baseline: cannot write {full_disk}/b.json: No space left on device"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert report["baseline"]["note"] == f"baseline NOT written: {full_disk}/b.json"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# -- 14. a stopped worker does not hang the run ----------------------------------------------------
def test_a_stopped_worker_times_out_and_the_run_goes_on(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"], isolation="process", call_timeout=3)
    project.pytester.makepyfile(textwrap.dedent("""
        import os, signal
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)
        @pytest.mark.parametrize("n", [1, 2])
        def test_talk(quant_model, n):
            if quant_model.name == "Q2_K" and n == 1:
                os.kill(quant_model._loaded()._proc.pid, signal.SIGSTOP)  # a wedged worker
            assert quant_model.generate("1, 2, 3,", max_tokens=2)
    """))
    result, report = project.run_report()
    result.stdout.fnmatch_lines(["*the worker a call on Q2_K did not answer within 3 s (call_timeout in "
                                 "quantgate.yaml); it was killed*"])
    names = {v["name"]: v for v in report["variants"]}
    assert names["Q8_0"]["passed"] is True and names["Q2_K"]["passed"] is False
    assert report["smallest_passing"] == "Q8_0"


# -- 16, 17. names ---------------------------------------------------------------------------------
def test_non_ascii_variant_name_compares_with_the_reference(project: Project) -> None:
    _write_config(project, {"F16": "F16", "Ü4": "Q4_K_M"}, reference="F16")
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.1, max_drop_vs_reference=1.0)
        @pytest.mark.parametrize("n", [1, 2])
        def test_count(quant_model, n):
            assert quant_model.generate(f"{n}, {n + 1},", max_tokens=3)
    """))
    result, report = project.run_report()
    assert "no case in common" not in result.stdout.str()
    names = {v["name"]: v for v in report["variants"]}
    assert names["Ü4"]["passed"] is True
    assert next(iter(names["Ü4"]["groups"].values()))["vs_reference"]["cases"] == 2


def test_same_file_name_in_two_folders_is_told_apart(project: Project) -> None:
    project.config(["Q2_K"])
    body = "import pytest\npytestmark = pytest.mark.quant_rubric(accuracy={acc})\n" \
           "def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n"
    for folder, acc in (("a", 0.5), ("b", 1.0)):
        (project.path / folder).mkdir()
        (project.path / folder / "__init__.py").write_text("")
        (project.path / folder / "test_x.py").write_text(body.format(acc=acc))
    result = project.run()
    result.stdout.fnmatch_lines(["variant *a/test_x.py*b/test_x.py*verdict"])


# -- 7. blessing a subset keeps the cases it did not run ----------------------------------------
def test_blessing_a_k_subset_keeps_the_other_cases_checked(project: Project,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(test_s=textwrap.dedent("""
        import os, pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.3)
        @pytest.mark.parametrize("n", ["one", "two", "three"])
        def test_case(quant_model, n):
            out = quant_model.generate("1, 2, 3,", max_tokens=2)
            assert os.environ.get("BREAK") not in (n, "all"), out
    """))
    project.run("--quant-update-baseline").assert_outcomes(passed=4)
    project.run("--quant-update-baseline", "-k", "one").assert_outcomes(passed=2)
    cases = json.loads((project.path / "quantgate-baseline.json").read_text())["variants"]["Q2_K"]["groups"]
    assert sorted(cases["test_s.py"]["cases"]) == ["test_s.py::test_case[one]", "test_s.py::test_case[three]",
                                                    "test_s.py::test_case[two]"]
    monkeypatch.setenv("BREAK", "two")
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*accuracy fell 0.33 > 0.00 vs baseline (1.00 -> 0.67 on 3 cases); regressed: two"])


def test_a_full_bless_drops_cases_that_no_longer_exist(project: Project) -> None:
    project.config(["Q2_K"])
    body = textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.3)
        @pytest.mark.parametrize("n", {names!r})
        def test_case(quant_model, n):
            assert quant_model.generate("1, 2, 3,", max_tokens=2)
    """)
    project.pytester.makepyfile(test_s=body.format(names=["one", "two"]))
    project.run("--quant-update-baseline").assert_outcomes(passed=3)
    project.pytester.makepyfile(test_s=body.format(names=["one"]))
    project.run("--quant-update-baseline").assert_outcomes(passed=2)
    groups = json.loads((project.path / "quantgate-baseline.json").read_text())["variants"]["Q2_K"]["groups"]
    assert list(groups["test_s.py"]["cases"]) == ["test_s.py::test_case[one]"]


# -- smaller items -------------------------------------------------------------------------------
def test_api_misuse_fails_with_one_line_each(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        CALLS = {
            "choose_no_options": lambda m: m.choose("Pick:", []),
            "choose_empty_option": lambda m: m.choose("Pick:", ["", "b"]),
            "choose_empty_prompt": lambda m: m.choose("", ["a", "b"]),
            "logprob_empty": lambda m: m.logprob("", "x"),
            "perplexity_tiny_ctx": lambda m: m.perplexity("one two three four " * 20, n_ctx=2),
            "perplexity_negative_ctx": lambda m: m.perplexity("one two", n_ctx=-4),
            "perplexity_short_text": lambda m: m.perplexity("one two", n_ctx=64),
            "chat_dict": lambda m: m.chat({"role": "user", "content": "hi"}),
            "max_tokens_zero": lambda m: m.generate("1, 2,", max_tokens=0),
            "max_tokens_negative": lambda m: m.generate("1, 2,", max_tokens=-1),
            "max_tokens_huge": lambda m: m.generate("1, 2,", max_tokens=10**9),
        }
        @pytest.mark.parametrize("call", sorted(CALLS))
        def test_misuse(quant_model, call):
            CALLS[call](quant_model)
    """))
    result = project.run("-rf")
    result.assert_outcomes(failed=11)
    out = result.stdout.str()
    assert "Traceback" not in out and "numpy" not in out and "site-packages" not in out
    result.stdout.fnmatch_lines_random([
        "*quant_model.choose: options: expected a non-empty list of strings, got []",
        "*quant_model.choose: options[[]0[]]: expected a non-empty string, got ''",
        "*quant_model.choose: prompt: expected a non-empty string, got ''",
        "*quant_model.logprob: prompt: expected a non-empty string, got ''",
        "*quant_model.perplexity: n_ctx: expected an integer of at least 4 *got 2",
        "*quant_model.perplexity: n_ctx: expected an integer of at least 4 *got -4",
        "*quant_model.perplexity: need at least 128 tokens for a context of 64, the text has *",
        "*quant_model.chat: expected a message string or a non-empty list of *got {*",
        "*quant_model.generate: max_tokens: expected a positive integer, got 0",
        "*quant_model.generate: max_tokens: expected a positive integer, got -1",
        "*quant_model.generate: max_tokens=1000000000 exceeds the context (llama.n_ctx 512)*",
    ])


def test_deselecting_a_verdict_removes_it(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"])
    project.pytester.makepyfile(test_d="import pytest\npytestmark = pytest.mark.quant_rubric(accuracy=0.5)\n"
                                       "def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    result = project.run("--deselect", "test_d.py::quant_rubric[Q2_K]", "-v")
    result.assert_outcomes(passed=3, deselected=1)
    assert "quant_rubric[Q2_K]" not in result.stdout.str().split("= quantgate =")[0]


def test_xdist_ids_have_no_stray_bracket(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"], llama={"n_ctx": 256, "n_threads": 1, "seed": 0})
    project.pytester.makepyfile(test_v="import pytest\npytestmark = pytest.mark.quant_rubric(accuracy=0.5)\n"
                                       "@pytest.mark.parametrize('n', [1])\n"
                                       "def test_v(quant_model, n):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    junit = project.path / "junit.xml"
    result = project.run("-n", "2", "-v", f"--junitxml={junit}")
    result.assert_outcomes(passed=4)
    text = result.stdout.str() + junit.read_text()
    assert "@Q2_K]" not in text and "@Q8_0]" not in text  # was test_v[Q2_K-1]@Q2_K]
    assert 'name="test_v[Q2_K-1]"' in text and 'name="quant_rubric[Q8_0]"' in text
    result.stdout.fnmatch_lines_random(["*PASSED test_v.py::test_v[[]Q2_K-1[]]*",
                                        "*PASSED test_v.py::quant_rubric[[]Q8_0[]]*"])
    assert "PASSED test_v.py::test_v[Q2_K-1]@" not in text


def test_rubric_defaults_without_any_marker_warn(project: Project) -> None:
    project.config(["Q2_K"], rubric={"accuracy": 0.9})
    project.pytester.makepyfile("def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    result = project.run()
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*quantgate.yaml: rubric: thresholds are set but no test has a quant_rubric "
                                 "marker, so nothing is judged*"])


# -- 11. a worker that dies while loading names the llama settings ------------------------------
def test_a_worker_dying_at_load_names_the_llama_settings(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"], isolation="process", llama={"n_ctx": 256, "n_threads": 2, "seed": 0})
    project.pytester.makepyfile(abortive=textwrap.dedent("""
        import os
        from pytest_quantgate.worker import serve
        def aborting_serve(conn, model_path, llama_kwargs):
            if "q2_k" in model_path:
                os.abort()  # what llama.cpp does with a setting it rejects natively
            serve(conn, model_path, llama_kwargs)
    """))
    project.pytester.makeconftest("""
        from abortive import aborting_serve
        from pytest_quantgate.worker import WorkerBackend
        def pytest_quantgate_load_model(config, variant, llama_kwargs):
            return WorkerBackend(aborting_serve).load(variant, llama_kwargs=llama_kwargs)
    """)
    project.pytester.makepyfile(test_w="import pytest\npytestmark = pytest.mark.quant_rubric(accuracy=0.5)\n"
                                       "def test_x(quant_model):\n    assert quant_model.generate('1,', max_tokens=2)\n")
    result, report = project.run_report()
    result.stdout.fnmatch_lines(["*could not load Q2_K (*): ModelCrashed: llama.cpp crashed while loading Q2_K "
                                 "(signal 6, SIGABRT) with llama: n_ctx=256, n_threads=2, seed=0*"])
    names = {v["name"]: v for v in report["variants"]}
    assert names["Q8_0"]["passed"] is True and names["Q2_K"]["passed"] is False
    assert names["Q2_K"]["groups"]["test_w.py"]["reasons"][0].startswith("could not load Q2_K")
