"""Hardening: the ladder never writes over its source, llama.cpp parameters are checked before
llama.cpp sees them, and a config error stays one short line whatever the YAML expands to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from quantgate_project import Ladder, Project
from pytest_quantgate import cli
from pytest_quantgate.config import load_settings

GENERATES = ("def test_gen(quant_model):\n"
             "    assert quant_model.generate('1, 2, 3, 4,', max_tokens=4).strip()\n")
KV_TYPES = "use one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1"


def _errors(result: pytest.RunResult) -> list[str]:
    """stderr without blank lines: a usage error must be exactly one line."""
    return [line for line in result.stderr.lines if line.strip()]


# -- 1. quantgate ladder must not overwrite its own source -------------------------------------

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["rung", "f16-rung", "hidden-base", "hard-link", "symlinked-out"])
def test_ladder_refuses_to_overwrite_its_source(ladder: Ladder, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], layout: str) -> None:
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    out, types = src_dir, "Q4_K_M"
    if layout == "rung":  # the rung the run would build has the source's own path
        source = target = src_dir / "m-q4_k_m.gguf"
    elif layout == "f16-rung":
        source = target = src_dir / "m-f16.gguf"
        types = "F16,Q8_0"
    elif layout == "hidden-base":  # no F16 rung asked for: the base is a dotfile
        source = target = src_dir / ".m-base-f16.gguf"
    elif layout == "hard-link":
        source = src_dir / "model.gguf"
        out = tmp_path / "out"
        out.mkdir()
        target = out / "m-q4_k_m.gguf"
    else:  # --out is a symlink to the source's directory
        source = src_dir / "m-q4_k_m.gguf"
        out = tmp_path / "models"
        out.symlink_to(src_dir)
        target = out / "m-q4_k_m.gguf"
    shutil.copyfile(ladder.files["Q2_K"], source)  # a small rung as the source
    if layout == "hard-link":
        os.link(source, target)
    before = (_sha(source), source.stat().st_mtime_ns)
    files_before = sorted(p.name for p in out.iterdir())

    rc = cli.main(["ladder", str(source), "--types", types, "--out", str(out), "--prefix", "m"])

    err = capsys.readouterr().err
    assert rc == 2
    what = ("is the source file" if layout != "hard-link"
            else f"is the same file as the source {source.resolve()}")
    assert err.splitlines() == [
        f"quantgate ladder: error: {target} {what}: the ladder would overwrite it; "
        "choose another --out or --prefix"
    ]
    assert (_sha(source), source.stat().st_mtime_ns) == before  # the source is untouched
    assert sorted(p.name for p in out.iterdir()) == files_before  # and nothing was built


def test_ladder_out_and_threads_errors_are_one_line(ladder: Ladder, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    rc = cli.main(["ladder", str(ladder.files["Q2_K"]), "--types", "Q4_K_M", "--out", str(not_a_dir)])
    assert rc == 2
    assert capsys.readouterr().err.splitlines() == [f"quantgate ladder: error: --out: {not_a_dir} is not a directory"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ladder", str(ladder.files["Q2_K"]), "--out", str(tmp_path), "--threads", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "quantgate ladder: error: argument --threads: expected a thread count between 1 and 512, got '0'")


# -- 2. llama.cpp parameters: refused before llama.cpp aborts the interpreter ------------------

@pytest.mark.parametrize("llama,generation,message", [
    ({"type_k": 99}, None, f"llama.type_k: 99 is not a KV cache type llama.cpp supports; {KV_TYPES}"),
    ({"type_k": 4}, None, f"llama.type_k: 4 is not a KV cache type llama.cpp supports; {KV_TYPES}"),
    ({"type_v": "q9_0"}, None, f"llama.type_v: 'q9_0' is not a KV cache type llama.cpp supports; {KV_TYPES}"),
    ({"type_k": True}, None, f"llama.type_k: True is not a KV cache type llama.cpp supports; {KV_TYPES}"),
    ({"type_v": "q8_0"}, None, "llama.type_v: q8_0 needs flash_attn: true (llama.cpp quantizes the V "
                               "cache only with Flash Attention); set it or use f16"),
    ({"n_ubatch": 0}, None, "llama.n_ubatch: must be positive, got 0"),
    ({"n_threads_batch": -2}, None, "llama.n_threads_batch: must be positive, got -2"),
    ({"n_threads": 100000}, None, "llama.n_threads: must be at most 512, got 100000"),
    ({"seed": 2**32}, None, "llama.seed: must be at most 4294967295, got 4294967296"),
    ({"seed": -2}, None, "llama.seed: must be -1 (random) or a uint32, got -2"),
    ({"n_gpu_layers": -5}, None, "llama.n_gpu_layers: must be -1 (all layers) or a layer count, got -5"),
    ({"rope_freq_scale": -1.0}, None,
     "llama.rope_freq_scale: must be 0 (the model's own) or a positive number, got -1.0"),
    (None, {"max_tokens": 600},
     "generation.max_tokens: 600 exceeds llama.n_ctx 512; lower it or raise llama.n_ctx"),
    (None, {"top_k": -1}, "generation.top_k: must be 0 (off) or a positive count, got -1"),
    (None, {"top_p": 0}, "generation.top_p: must be above 0 and at most 1, got 0"),
    (None, {"top_p": 1.5}, "generation.top_p: must be above 0 and at most 1, got 1.5"),
    (None, {"temperature": -0.5}, "generation.temperature: must be 0 (greedy) or a positive number, got -0.5"),
    (None, {"temperature": float("nan")}, "generation.temperature: must be 0 (greedy) or a positive number, got nan"),
])
def test_llama_parameters_out_of_range_are_usage_errors(
        project: Project, llama: dict[str, object] | None, generation: dict[str, object] | None,
        message: str) -> None:
    extra: dict[str, object] = {}
    if llama is not None:
        extra["llama"] = {"n_ctx": 512, "n_threads": 2, "seed": 0, **llama}
    if generation is not None:
        extra["generation"] = generation
    project.config(["Q2_K"], **extra)
    project.pytester.makepyfile(GENERATES)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert _errors(result) == [f"ERROR: quantgate.yaml: {message}"]
    assert "Traceback" not in result.stdout.str()


def test_kv_cache_type_by_name_is_stored_as_its_code_and_generates(project: Project) -> None:
    project.config(["Q2_K"], llama={"n_ctx": 512, "n_threads": 2, "seed": -1, "type_k": "Q8_0",
                                    "type_v": "q8_0", "flash_attn": True})
    project.pytester.makepyfile(GENERATES + (
        "\ndef test_params(quant_model):\n"
        "    p = quant_model.llm.context_params\n"
        "    assert (p.type_k, p.type_v) == (8, 8)\n"))
    result, report = project.run_report()
    result.assert_outcomes(passed=2)
    assert report["environment"]["llama"]["type_k"] == 8


# -- 3. error messages stay short: a billion-laughs YAML must not hang the run -----------------

def _laughs() -> str:
    """Anchors &a..&i, each nine aliases of the one before: ``*i`` expands to 9**9 strings,
    in about 500 bytes of YAML (a billion-laughs document)."""
    levels = "abcdefghi"
    items = ["&a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, len(levels)):
        items.append(f"&{levels[i]} [" + ", ".join([f"*{levels[i - 1]}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("doc,message", [
    ("model: {L}\nreference: *i\n", "reference: * is not a variant; variants: Q2_K"),
    ("reference: {L}\n", "reference: * is not a variant; variants: Q2_K"),
    ("model: {L}\nllama: {{n_ctx: *i}}\n", "llama.n_ctx: expected int, got *"),
    ("llama: {{type_k: {L}}}\n", "llama.type_k: expected int or str, got *"),
    ("generation: {{top_p: {L}}}\n", "generation.top_p: expected int or float, got *"),
    ("rubric: {{accuracy: {L}}}\n", "rubric.accuracy: expected a number, got *"),
    ("fidelity: {{corpus: {L}}}\n", "fidelity.corpus: expected str, got *"),
    ("model: {L}\n", "model: expected a name for reports, got list"),
    ("call_timeout: {L}\n", "call_timeout: expected seconds, a number above 0 and at most 1000000, got list"),
])
def test_billion_laughs_config_gives_a_short_error_fast(project: Project, doc: str, message: str) -> None:
    variants = json.dumps({"Q2_K": str(project.ladder.files["Q2_K"])})
    text = f"variants: {variants}\n" + doc.format(L=_laughs())
    (project.path / "quantgate.yaml").write_text(text)
    project.pytester.makepyfile(GENERATES)
    t0 = time.perf_counter()
    # project.run without a timeout would hang on the bug; this one fails instead
    result = project.pytester.runpytest_subprocess("-p", "no:randomly", "-o", f"cache_dir={project.cache}",
                                                   timeout=60)
    assert time.perf_counter() - t0 < 30
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: quantgate.yaml: {message}"])
    assert len(_errors(result)) == 1 and len(_errors(result)[0]) < 300


@pytest.mark.parametrize("text,message", [
    ("baseline: 2024-13-45\n", "invalid YAML: month must be in 1..12"),
    ("llama: {{n_ctx: {digits}}}\n",
     "invalid YAML: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"),
    ("llama: {{n_ctx: 0x{hexdigits}}}\n", "llama.n_ctx: must be at most 2147483647, got <20000-bit int>"),
    ("model: {deep}\n", "invalid YAML: nested too deeply"),
])
def test_yaml_values_python_cannot_build_are_usage_errors(project: Project, text: str, message: str) -> None:
    variants = json.dumps({"Q2_K": str(project.ladder.files["Q2_K"])})
    body = text.format(digits="1" * 5000, hexdigits="f" * 5000, deep="[" * 5000 + "]" * 5000)
    (project.path / "quantgate.yaml").write_text(f"variants: {variants}\n" + body)
    project.pytester.makepyfile(GENERATES)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert _errors(result) == [f"ERROR: quantgate.yaml: {message}"]


# -- 4. call_timeout ----------------------------------------------------------------------------

@pytest.mark.parametrize("value,shown", [(-1, "-1"), (0, "0"), ("soon", "'soon'"), (True, "True"),
                                         (2_000_000, "2000000")])
def test_call_timeout_must_be_positive_seconds(project: Project, value: object, shown: str) -> None:
    project.config(["Q2_K"], call_timeout=value)
    project.pytester.makepyfile(GENERATES)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert _errors(result) == [
        "ERROR: quantgate.yaml: call_timeout: expected seconds, a number above 0 and at most 1000000, "
        f"got {shown}"
    ]


def test_call_timeout_default_and_value(ladder: Ladder, tmp_path: Path) -> None:
    cfg = tmp_path / "quantgate.yaml"
    cfg.write_text(json.dumps({"variants": {"Q2_K": str(ladder.files["Q2_K"])}}))
    assert load_settings(cfg).call_timeout == 600.0
    cfg.write_text(json.dumps({"variants": {"Q2_K": str(ladder.files["Q2_K"])}, "call_timeout": 2.5}))
    assert load_settings(cfg).call_timeout == 2.5
