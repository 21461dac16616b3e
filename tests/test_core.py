"""The core contract on the real SmolLM2 ladder: ids, selection, loading, measurements."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quantgate_project import Project

CAPITAL_TEST = """
def test_capital(quant_model):
    assert quant_model.chat("What is the capital of France?", max_tokens=16).strip()
"""


def test_help_shows_quantgate_group(project: Project) -> None:
    result = project.run("--help")
    result.stdout.fnmatch_lines([
        "quantgate: gate quantized GGUF variants on your own rubric:",
        "*--quant-variants=LIST*",
        "*--quant-config=PATH*",
        "*--quant-gate=all|any*",
        "*--quant-report=PATH*",
    ])


def test_variants_become_ids_in_config_order(project: Project) -> None:
    project.config(["F16", "Q8_0", "Q4_K_M"], reference="F16")
    project.pytester.makepyfile(CAPITAL_TEST)
    result = project.run("-v")
    result.stdout.fnmatch_lines([
        "*test_capital[[]F16[]] PASSED*",
        "*test_capital[[]Q8_0[]] PASSED*",
        "*test_capital[[]Q4_K_M[]] PASSED*",
    ])
    result.stdout.fnmatch_lines(["quantgate: quantgate.yaml (SmolLM2-135M-Instruct): F16, Q8_0, Q4_K_M"])


@pytest.mark.parametrize("flag,expected", [
    ("Q4,q8", ["Q8_0", "Q4_K_M"]),
    ("q2_k", ["Q2_K"]),
    ("F16,Q2", ["F16", "Q2_K"]),
])
def test_quant_variants_selects_by_name_or_prefix(project: Project, flag: str, expected: list[str]) -> None:
    project.config()
    project.pytester.makepyfile("def test_v(quant_variant):\n    assert quant_variant.path.is_file()\n")
    result = project.run("-v", f"--quant-variants={flag}")
    result.assert_outcomes(passed=len(expected))
    ran = [line.split("[")[1].split("]")[0] for line in result.outlines if "::test_v[" in line and "PASSED" in line]
    assert ran == expected


def test_unknown_variant_is_a_usage_error(project: Project) -> None:
    project.config()
    project.pytester.makepyfile("def test_v(quant_variant):\n    pass\n")
    result = project.run("--quant-variants=Q4,Q7")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: --quant-variants: 'Q7' selects no variant; configured: F16, Q8_0, Q4_K_M, Q2_K"
    ])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@pytest.mark.parametrize("yaml_text,message", [
    ("variants:\n  F16: models/missing.gguf\n",
     "ERROR: quantgate.yaml: variants.F16: models/missing.gguf: no such file*"),
    ("variants:\n  F16: [unclosed\n", "ERROR: quantgate.yaml:3:1: invalid YAML: *"),
    ("variants:\n  F16: .\n", "ERROR: quantgate.yaml: variants.F16: . is a directory, not a .gguf file"),
    ("variants: {{}}\n", "ERROR: quantgate.yaml: no variants; add variants:*"),
    ("varients: {{}}\n", "ERROR: quantgate.yaml: unknown key 'varients'; known keys: model, variants*"),
    ("variants_glob: 'nothing/*.gguf'\n", "ERROR: quantgate.yaml: variants_glob: 'nothing/*.gguf' matches no file*"),
    ("variants:\n  F16: {f16}\nreference: Q9\n", "ERROR: quantgate.yaml: reference: 'Q9' is not a variant; variants: F16"),
    ("variants:\n  F16: {f16}\nllama: {{n_ctx: big}}\n", "ERROR: quantgate.yaml: llama.n_ctx: expected int, got 'big'"),
    ("variants:\n  F16: {f16}\nllama: {{n_ctxx: 512}}\n", "ERROR: quantgate.yaml: llama.n_ctxx: unknown key; known: n_ctx*"),
    ("variants:\n  F16: {f16}\nrubric: {{accuracy: high}}\n",
     "ERROR: quantgate.yaml: rubric.accuracy: expected a number, got 'high'"),
])
def test_bad_config_is_one_clear_line(project: Project, yaml_text: str, message: str) -> None:
    (project.path / "quantgate.yaml").write_text(yaml_text.format(f16=project.ladder.files["F16"]))
    project.pytester.makepyfile("def test_v(quant_variant):\n    pass\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_quant_config_flag_and_missing_path(project: Project) -> None:
    cfg = project.config(["Q8_0"])
    moved = project.path / "conf" / "qg.yaml"
    moved.parent.mkdir()
    cfg.rename(moved)
    project.pytester.makepyfile(CAPITAL_TEST)
    project.run("--quant-config=conf/qg.yaml").assert_outcomes(passed=1)
    result = project.run("--quant-config=conf/nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --quant-config: conf/nope.yaml: no such file"])


def test_glob_discovery_names_variants_from_gguf_metadata(project: Project, tmp_path: Path) -> None:
    models = project.path / "models"
    models.mkdir()
    for t in ("Q8_0", "Q3_K_M"):
        # Neutral file names: the names must come from general.file_type, not the file name.
        (models / f"rung-{t[1]}.gguf").symlink_to(project.ladder.files[t])
    (project.path / "quantgate.yaml").write_text("variants_glob: 'models/*.gguf'\n")
    project.pytester.makepyfile(
        "def test_v(quant_variant):\n    assert quant_variant.file_type == quant_variant.name\n"
    )
    result = project.run("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_v[[]Q8_0[]] PASSED*", "*test_v[[]Q3_K_M[]] PASSED*"])


def test_variant_fixture_fields_match_the_file(project: Project) -> None:
    project.config(["Q4_K_M"])
    project.pytester.makepyfile(textwrap.dedent("""
        import hashlib, os
        def test_fields(quant_model, quant_variant):
            v = quant_model.variant
            assert v is quant_variant
            assert v.name == "Q4_K_M" and v.file_type == "Q4_K_M"
            assert v.size_bytes == os.path.getsize(v.path)
            assert v.sha256 == hashlib.sha256(v.path.read_bytes()).hexdigest()
            import llama_cpp
            assert isinstance(quant_model.llm, llama_cpp.Llama)
    """))
    project.run().assert_outcomes(passed=1)


LOAD_LOG_CONFTEST = """
import json, os, llama_cpp
EVENTS = []
_init, _close = llama_cpp.Llama.__init__, llama_cpp.Llama.close
def __init__(self, *a, **k):
    EVENTS.append(["load", os.path.basename(k["model_path"])])
    _init(self, *a, **k)
def close(self):
    EVENTS.append(["close", os.path.basename(self.model_path)])
    _close(self)
llama_cpp.Llama.__init__, llama_cpp.Llama.close = __init__, close
def pytest_sessionfinish(session):
    with open("events.json", "w") as fh:
        json.dump(EVENTS, fh)
"""


def test_each_variant_loads_once_and_closes_before_the_next(project: Project) -> None:
    project.config(["F16", "Q8_0", "Q2_K"])
    project.pytester.makeconftest(LOAD_LOG_CONFTEST)
    # Two modules interleave variants in collection order; the plugin must regroup them.
    for mod in ("test_a", "test_b"):
        project.pytester.makepyfile(**{mod: textwrap.dedent("""
            import pytest
            @pytest.mark.parametrize("n", [1, 2])
            def test_gen(quant_model, n):
                assert quant_model.generate("1, 2, 3,", max_tokens=4)
        """)})
    result, report = project.run_report("-v")
    result.assert_outcomes(passed=12)
    events = json.loads((project.path / "events.json").read_text())
    # Llama.__del__ calls close() again when the object is collected; a repeat is harmless
    events = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
    f = {n: project.ladder.files[n].name for n in ("F16", "Q8_0", "Q2_K")}
    assert events == [
        ["load", f["F16"]], ["close", f["F16"]],
        ["load", f["Q8_0"]], ["close", f["Q8_0"]],
        ["load", f["Q2_K"]], ["close", f["Q2_K"]],
    ]
    assert [v["loads"] for v in report["variants"]] == [1, 1, 1]


TIMING_TEST = """
import json, time
PROMPTS = ["Name three colors.", "What is 2 + 2?", "Write a haiku about the sea."]
def test_measure(quant_model):
    tokens, seconds = 0, 0.0
    for p in PROMPTS:
        t0 = time.perf_counter()
        text = quant_model.chat(p, max_tokens=40)
        seconds += time.perf_counter() - t0
        tokens += quant_model.last.completion_tokens
        # the usage count must be the real token count of the text the model produced
        assert quant_model.last.completion_tokens >= len(quant_model.llm.tokenize(text.encode(), add_bos=False, special=True))
    with open(f"own-{quant_model.name}.json", "w") as fh:
        json.dump({"tokens": tokens, "seconds": seconds}, fh)
"""


def test_speed_figures_match_an_independent_stopwatch(project: Project) -> None:
    project.config(["Q8_0", "Q4_K_M"])
    project.pytester.makepyfile(TIMING_TEST)
    result, report = project.run_report()
    result.assert_outcomes(passed=2)
    for v in report["variants"]:
        own = json.loads((project.path / f"own-{v['name']}.json").read_text())
        calls = [c for c in report["variants"] if c["name"] == v["name"]][0]
        assert v["tokens_per_second"] is not None and v["decode_tokens_per_second"] is not None
        # The plugin times the llama call itself; the test's stopwatch adds only Python glue.
        assert v["tokens_per_second"] == pytest.approx(own["tokens"] / own["seconds"], rel=0.05)
        assert calls["tokens_per_second"] > 0
        # llama.cpp's decode counter excludes prompt processing, so it is faster end to end.
        assert v["decode_tokens_per_second"] > v["tokens_per_second"]


# VmHWM is the peak RSS of this process image; unlike getrusage's ru_maxrss it is not
# inherited across fork+exec from a large parent (the test runner), so it is the child's own.
PEAK_SCRIPT = """
import sys, psutil, llama_cpp
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
base = psutil.Process().memory_info().rss
assert hwm() - base < 20_000_000, "the peak so far should be about the baseline"
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, seed=0, verbose=False)
llm.create_chat_completion(messages=[{"role": "user", "content": "Name three colors."}],
                           max_tokens=40, temperature=0.0, seed=0)
print((hwm() - base) / 1e6)
"""


@pytest.mark.parametrize("name", ["F16", "Q4_K_M"])
def test_memory_within_15_percent_of_a_fresh_process_peak(project: Project, name: str) -> None:
    project.config([name])
    project.pytester.makepyfile(
        "def test_use(quant_model):\n    assert quant_model.chat('Name three colors.', max_tokens=40)\n"
    )
    result, report = project.run_report()
    result.assert_outcomes(passed=1)
    ours = report["variants"][0]["memory_mb"]
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(project.ladder.files[name])],
                         capture_output=True, text=True, check=True)
    theirs = float(out.stdout.strip())
    assert ours == pytest.approx(theirs, rel=0.15), (ours, theirs)


def test_greedy_runs_repeat_exactly(project: Project) -> None:
    project.config(["Q4_K_M"])
    project.pytester.makepyfile(textwrap.dedent("""
        import pytest
        @pytest.mark.parametrize("p", ["Tell me a story.", "List four fruits."])
        def test_out(quant_model, p, request):
            text = quant_model.chat(p, max_tokens=48)
            with open("out.txt", "a") as fh:
                fh.write(request.node.name + repr(text) + "\\n")
    """))
    project.run().assert_outcomes(passed=2)
    first = (project.path / "out.txt").read_text()
    (project.path / "out.txt").unlink()
    project.run("-k", "fruits").assert_outcomes(passed=1)  # alone, after no other call
    project.run("-p", "no:cacheprovider").assert_outcomes(passed=2)
    second = (project.path / "out.txt").read_text()
    fruits = [line for line in first.splitlines() if "fruits" in line][0]
    assert second.splitlines()[0] == fruits
    assert second.splitlines()[1:] == first.splitlines()


def test_quant_model_without_config_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_v(quant_model):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*quant_model: no quantgate.yaml found in *; create one*"])
