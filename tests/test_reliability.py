"""Bad input, broken files, crashes, memory guard, interruptions: nothing lost, every message clear."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from quantgate_project import Project

USE = "def test_use(quant_model):\n    assert quant_model.generate('1, 2, 3,', max_tokens=4)\n"


def _bad_copy(project: Project, name: str, how: str) -> Path:
    src = project.ladder.files["Q2_K"]
    dst = project.path / f"{name}.gguf"
    if how == "magic":
        dst.write_bytes(b"GGML" + src.read_bytes()[4:4096])
    elif how == "truncated":
        with src.open("rb") as fh:
            dst.write_bytes(fh.read(src.stat().st_size - 1_000_000))
    elif how == "version":
        shutil.copyfile(src, dst)
        with dst.open("r+b") as fh:
            fh.seek(4)
            fh.write((7).to_bytes(4, "little"))
    elif how == "arch":
        data = bytearray(src.read_bytes())
        i = data.index(b"llama", 0, 4096)  # general.architecture value: same length, unknown arch
        data[i:i + 5] = b"zzzzz"
        dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how,message", [
    ("magic", "*variant BAD: BAD.gguf: not a GGUF file (magic b'GGML', expected b'GGUF')"),
    ("truncated", "*variant BAD: BAD.gguf: truncated: tensor * runs to byte * but the file has * bytes"),
    ("version", "*variant BAD: BAD.gguf: unsupported GGUF version 7*"),
])
def test_broken_file_errors_its_variant_only(project: Project, how: str, message: str) -> None:
    bad = _bad_copy(project, "BAD", how)
    cfg = {"Q8_0": str(project.ladder.files["Q8_0"]), "BAD": str(bad)}
    (project.path / "quantgate.yaml").write_text(json.dumps({"variants": cfg, "llama": {"n_ctx": 256}}))
    project.pytester.makepyfile(USE)
    result, report = project.run_report("-rE")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([message])
    assert [v["name"] for v in report["variants"]] == ["BAD", "Q8_0"]
    assert report["smallest_passing"] == "Q8_0"


def test_architecture_llama_cpp_cannot_run_is_caught_in_preflight(project: Project) -> None:
    bad = _bad_copy(project, "ARCH", "arch")
    cfg = {"Q8_0": str(project.ladder.files["Q8_0"]), "ARCH": str(bad)}
    (project.path / "quantgate.yaml").write_text(json.dumps({"variants": cfg}))
    project.pytester.makepyfile(USE)
    result = project.run("-rE")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*variant ARCH: ARCH.gguf: architecture 'zzzzz' is not one llama.cpp supports*"])


def test_variants_of_different_models_are_refused(project: Project, tmp_path: Path) -> None:
    src = project.ladder.files["Q2_K"]
    data = bytearray(src.read_bytes())
    i = data.index(b"<|im_start|>")  # change one vocabulary entry, same length
    data[i:i + 12] = b"<|im_begin|>"
    other = project.path / "other.gguf"
    other.write_bytes(bytes(data))
    cfg = {"Q8_0": str(project.ladder.files["Q8_0"]), "OTHER": str(other)}
    (project.path / "quantgate.yaml").write_text(json.dumps({"variants": cfg}))
    project.pytester.makepyfile(USE)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: quantgate.yaml: variants Q8_0 (*) and OTHER (other.gguf) have different tokenizers: "
        "they are not quants of one model"
    ])


def test_sha256_pin_refuses_a_changed_file(project: Project) -> None:
    q8 = project.ladder.files["Q8_0"]
    wrong = "0" * 64
    cfg = {"Q8_0": {"path": str(q8), "sha256": wrong}, "Q2_K": str(project.ladder.files["Q2_K"])}
    (project.path / "quantgate.yaml").write_text(json.dumps({"variants": cfg}))
    project.pytester.makepyfile(USE)
    result = project.run("-rE")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*variant Q8_0: {q8.name}: SHA-256 * does not match the pinned {wrong}*"])


def test_hashes_are_cached_by_path_size_mtime(project: Project) -> None:
    project.config(["Q2_K"])
    project.pytester.makepyfile("def test_v(quant_variant):\n    print('SHA', quant_variant.sha256)\n")
    cache = project.pytester.path / "own-cache"
    first = project.pytester.runpytest_subprocess("-s", "-o", f"cache_dir={cache}")
    entries = list((cache / "v" / "quantgate" / "files").rglob("*"))
    assert any(p.is_file() for p in entries)
    # poison the cached hash: a second run must take it from the cache, not the file
    for p in entries:
        if p.is_file():
            data = json.loads(p.read_text())
            data["sha256"] = "f" * 64
            p.write_text(json.dumps(data))
    second = project.pytester.runpytest_subprocess("-s", "-o", f"cache_dir={cache}")
    assert "SHA " + "f" * 64 in second.stdout.str()
    assert "SHA " + "f" * 64 not in first.stdout.str()


CRASH_MODULE = """
import ctypes
from pytest_quantgate.worker import serve

def crashing_serve(conn, model_path, llama_kwargs):
    if "q3_k_m" in model_path:
        real_conn = conn
        class Crashy:
            def send(self, msg):
                real_conn.send(msg)
            def recv(self):
                msg = real_conn.recv()
                if msg[0] == "chat":
                    ctypes.string_at(0)  # a real SIGSEGV in this worker process
                return msg
        conn = Crashy()
    serve(conn, model_path, llama_kwargs)
"""

CRASH_CONFTEST = """
from crashhelper import crashing_serve
from pytest_quantgate.worker import WorkerBackend

def pytest_quantgate_load_model(config, variant, llama_kwargs):
    return WorkerBackend(crashing_serve).load(variant, llama_kwargs=llama_kwargs)
"""


def test_native_crash_in_a_worker_fails_that_variant_only(project: Project) -> None:
    project.config(["Q8_0", "Q3_K_M", "Q2_K"])
    project.pytester.makepyfile(crashhelper=CRASH_MODULE)
    project.pytester.makeconftest(CRASH_CONFTEST)
    project.pytester.makepyfile(test_c=textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(disk_mb=500)
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_chat(quant_model, n):
            assert quant_model.chat("Say hi.", max_tokens=4) is not None
    """))
    result, report = project.run_report("-rfE")
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_chat[[]Q3_K_M-2[]]*",
        "llama.cpp crashed while running Q3_K_M (signal 11, SIGSEGV)",
        "*_ test_chat[[]Q3_K_M-1[]] _*",
        "llama.cpp crashed while running Q3_K_M (signal 11, SIGSEGV)",
        "*= quantgate =*",
    ])
    assert "During handling" not in result.stdout.str()
    # 6 cases + 2 verdicts pass; Q3_K_M: 1 failed, 2 errors, and its verdict fails on the crash
    # (no evidence is not a pass: it used to pass on disk_mb alone)
    result.assert_outcomes(passed=8, failed=2, errors=2)
    names = {v["name"]: v for v in report["variants"]}
    assert set(names) == {"Q8_0", "Q3_K_M", "Q2_K"}
    assert names["Q3_K_M"]["passed"] is False and names["Q2_K"]["passed"] is True
    assert report["smallest_passing"] == "Q2_K"
    assert report["incomplete"] is False


def test_isolated_worker_measures_its_own_memory(project: Project) -> None:
    project.config(["Q4_K_M"], isolation="process")
    project.pytester.makepyfile(USE + "\ndef test_no_llm(quant_model):\n    assert quant_model.llm is None\n")
    result, report = project.run_report()
    result.assert_outcomes(passed=2)
    inproc, report2 = Project(project.pytester, project.ladder, project.cache).run_report("--quant-isolation=none")
    ours, theirs = report["variants"][0]["memory_mb"], report2["variants"][0]["memory_mb"]
    assert ours == pytest.approx(theirs, rel=0.15)


def test_memory_guard_refuses_a_variant_far_over_the_ceiling(project: Project) -> None:
    project.config(["F16", "Q2_K"], rubric={"memory_mb": 80})
    project.pytester.makepyfile("import pytest\npytestmark = pytest.mark.quant_rubric()\n" + USE)
    result, report = project.run_report("-rE")
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_use[[]F16[]]*",
        "could not load F16 (*): MemoryError: needs at least * MB, over 3x the loosest memory_mb 80 of "
        "its groups; not loaded (raise memory_mb or drop the variant)",
    ])
    # Q2_K still ran and was measured (its real figure may miss the ceiling: that is its verdict)
    q2 = [v for v in report["variants"] if v["name"] == "Q2_K"][0]
    assert q2["loads"] == 1 and q2["memory_mb"] > 0


def test_interrupted_run_still_writes_an_incomplete_report(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"])
    project.pytester.makepyfile(textwrap.dedent("""
        def test_a(quant_model):
            assert quant_model.generate("1, 2,", max_tokens=2)
        def test_b(quant_model):
            if quant_model.name == "Q2_K":
                raise KeyboardInterrupt
    """))
    result, report = project.run_report()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert report["incomplete"] is True
    assert {v["name"] for v in report["variants"]} == {"Q8_0", "Q2_K"}
    q8 = [v for v in report["variants"] if v["name"] == "Q8_0"][0]
    assert q8["loads"] == 1 and q8["tokens_per_second"] > 0
    result.stdout.fnmatch_lines(["run incomplete: figures cover only the tests that finished"])


def test_stop_on_first_failure_marks_the_report_incomplete(project: Project) -> None:
    project.config(["Q8_0", "Q2_K"])
    project.pytester.makepyfile("def test_a(quant_variant):\n    assert quant_variant.name != 'Q8_0'\n")
    result, report = project.run_report("-x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert report["incomplete"] is True


def test_conflicting_isolation_and_fidelity_are_usage_errors(project: Project) -> None:
    (project.path / "corpus.txt").write_text("word " * 3000)
    project.config(["Q8_0"], reference="Q8_0", fidelity={"corpus": "corpus.txt"})
    project.pytester.makepyfile(USE)
    result = project.run("--quant-isolation=process")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: quantgate.yaml: fidelity.corpus conflicts with isolation: process*"])
    project.config(["Q8_0"], reference="Q8_0", isolation="process")
    project.pytester.makepyfile("import pytest\n@pytest.mark.quant_rubric(max_kld=0.1)\n" + USE)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *test_use[[]Q8_0[]]: quant_rubric: max_kld/min_top1_agreement/"
                                 "max_perplexity_ratio need the model in the test process*"])


@pytest.mark.parametrize("args,message", [
    (["--quant-gate=some"], "*--quant-gate: expected one of all, any, got 'some'"),
    (["--quant-isolation=vm"], "*--quant-isolation: expected one of none, process, got 'vm'"),
    (["--quant-variants=,"], "*--quant-variants: expected a comma-separated list of variant names*"),
    (["--quant-baseline=nope.json"], "ERROR: --quant-baseline: nope.json: no such file; create it with --quant-update-baseline"),
])
def test_bad_flags_are_usage_errors(project: Project, args: list[str], message: str) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(USE)
    result = project.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize("where", ["test", "load hook"])
def test_a_variant_whose_cases_all_skip_has_no_verdict_and_never_passes(project: Project, where: str) -> None:
    """No evidence is not a pass: Q2_K used to be "pass" and even "smallest passing"."""
    project.config(["Q8_0", "Q2_K"])
    if where == "load hook":
        project.pytester.makeconftest("""
            import pytest
            def pytest_quantgate_load_model(config, variant, llama_kwargs):
                if variant.name == "Q2_K":
                    pytest.skip("served elsewhere")
        """)
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        @pytest.mark.quant_rubric(accuracy=0.5, disk_mb=500)
        def test_s(quant_model):
            if quant_model.name == "Q2_K":
                pytest.skip("served elsewhere")
            assert quant_model.generate("1, 2, 3,", max_tokens=2)
    """))
    result, report = project.run_report("-rs")
    result.assert_outcomes(passed=2, skipped=1, failed=1)
    result.stdout.fnmatch_lines([
        "Q2_K *no verdict*FAIL: test_*::test_s: no verdict: none of its 1 case(s) was evaluated on Q2_K, "
        "all skipped: served elsewhere",
        "smallest passing variant: Q8_0 *",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert report["smallest_passing"] == "Q8_0"
    q2 = [v for v in report["variants"] if v["name"] == "Q2_K"][0]
    assert q2["passed"] is False
    assert [g["no_verdict"] for g in q2["groups"].values()] == [True]


def test_report_path_that_is_a_directory_is_a_usage_error(project: Project) -> None:
    project.config(["Q8_0"])
    project.pytester.makepyfile(USE)
    (project.path / "out").mkdir()
    result = project.run("--quant-report=out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --quant-report: out is a directory; give a file path such as out/quantgate.json"])


def test_a_corrupt_cached_reference_is_a_miss_with_a_warning(project: Project) -> None:
    """A corrupt .npz in the cache is ignored (never trusted, never a crash): the verdict
    fails with the reason and keeps the accuracy of the cases that ran."""
    project.config(["F16", "Q2_K"], reference="F16")
    project.pytester.makepyfile(test_fid=textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(max_kld=1.0)
        def test_talk(quant_model):
            assert quant_model.chat("Say hi.", max_tokens=8)
    """))
    cache = project.path / "own-cache"
    first = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}")
    first.assert_outcomes(passed=4)
    npzs = list((cache / "d" / "quantgate-fidelity").glob("*.npz"))
    assert npzs
    for npz in npzs:
        npz.write_bytes(b"not a zip file")
    report = project.path / "r.json"
    result = project.pytester.runpytest_subprocess("-o", f"cache_dir={cache}", "--quant-variants=Q2",
                                                   f"--quant-report={report}")
    result.assert_outcomes(passed=1, failed=1, warnings=1)
    result.stdout.fnmatch_lines(["*quantgate: ignoring cached reference distributions *.npz: unreadable*",
                                 "Q2_K * 1.00 * FAIL *no cached distributions match*"])
    assert "Traceback" not in result.stdout.str()
    data = json.loads(report.read_text())
    assert data["variants"][0]["passed"] is False


def test_a_verdict_that_cannot_be_evaluated_fails_and_keeps_its_figures(project: Project) -> None:
    """An internal fault while judging (simulated) fails the verdict with the reason; the
    summary keeps it, with the accuracy of the cases that ran (it used to show n/a)."""
    project.config(["Q2_K"])
    project.pytester.makeconftest("""
        import pytest_quantgate.judge as judge
        def boom(rubric, figures):
            raise RuntimeError("simulated fault")
        judge.evaluate = boom
    """)
    project.pytester.makepyfile(test_e=textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.quant_rubric(accuracy=0.5)
        def test_talk(quant_model):
            assert quant_model.generate("1, 2, 3,", max_tokens=2)
    """))
    result, report = project.run_report()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["could not evaluate the rubric: RuntimeError: simulated fault",
                                 "Q2_K * 1.00 [[]0.21-1.00[]] FAIL *"])
    assert report["variants"][0]["groups"]["test_e.py"]["accuracy"] == 1.0
