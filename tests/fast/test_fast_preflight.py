"""The tiny ladder passes the plugin's preflight (so the other fast tests exercise the real
path), and the preflight still refuses what it must: files of another model, architectures
llama.cpp does not know, truncated files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .fake_project import TOKENS, FakeProject, TinyLadder, echo_cases, write_tiny_gguf


def test_quantgate_inspect_reads_the_tiny_ladder(tiny_ladder: TinyLadder) -> None:
    quantgate = Path(sys.executable).with_name("quantgate")  # the console script, as a user runs it
    out = subprocess.run([str(quantgate), "inspect", str(tiny_ladder.dir)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in out.stdout.splitlines()[1:]}
    assert rows == {
        "tiny-f16.gguf": ["llama", "F16", "0.8"],
        "tiny-q8_0.gguf": ["llama", "Q8_0", "0.4"],
        "tiny-q4_k_m.gguf": ["llama", "Q4_K_M", "0.2"],
        "tiny-q2_k.gguf": ["llama", "Q2_K", "0.1"],
    }


def test_variants_glob_names_the_tiny_files_by_file_type_largest_first(fake: FakeProject) -> None:
    models = fake.path / "models"
    models.mkdir()
    for path in fake.ladder.files.values():
        (models / path.name).symlink_to(path)
    (fake.path / "quantgate.yaml").write_text("variants_glob: models/*.gguf\nllama: {n_ctx: 256}\n")
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    result = fake.run()
    result.stdout.fnmatch_lines(["quantgate: quantgate.yaml (*): F16, Q8_0, Q4_K_M, Q2_K"])
    assert result.ret == pytest.ExitCode.OK


def test_a_file_of_another_model_is_a_usage_error(fake: FakeProject, tmp_path: Path) -> None:
    other = write_tiny_gguf(tmp_path / "other.gguf", 7, 1000, tokens=[*TOKENS, "extra"])
    fake.config(files={"F16": fake.ladder.files["F16"], "OTHER": other})
    result = fake.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: quantgate.yaml: variants F16 (tiny-f16.gguf) and OTHER (other.gguf) "
                                 "have different tokenizers: they are not quants of one model"])


@pytest.mark.parametrize("how", ["architecture", "truncated"])
def test_a_broken_file_errors_its_variant_only(fake: FakeProject, tmp_path: Path, how: str) -> None:
    bad = tmp_path / "bad.gguf"
    if how == "architecture":
        write_tiny_gguf(bad, 7, 1000, arch="notallama")
        why = "architecture 'notallama' is not one llama.cpp supports*"
    else:
        data = fake.ladder.files["Q8_0"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        why = "truncated: *"
    fake.config(files={"Q8_0": fake.ladder.files["Q8_0"], "BAD": bad})
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    result, report = fake.run_report("-rE")
    result.assert_outcomes(passed=5, errors=4, failed=1)
    result.stdout.fnmatch_lines(["_*_ ERROR at setup of test_echo[[]BAD-alpha[]] _*_", f"variant BAD: bad.gguf: {why}"])
    assert [e for e in fake.events() if e[0] == "load"] == [("load", "Q8_0")]  # BAD is never loaded
    assert report["smallest_passing"] == "Q8_0"
