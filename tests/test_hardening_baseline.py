"""A committed baseline is data read from disk: it must prove its whole shape, and a bad one is
one clear error line (file, key path, fix), never a traceback.

End to end on the real ladder: one variant (Q2_K), n_ctx 256, two 4-token cases. The baseline is
blessed once per module by a real run; each corruption edits a copy of it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantgate_project import Ladder, Project
from pytest_quantgate.baseline import (
    OUTCOMES,
    SCHEMA,
    BaselineError,
    build_baseline,
    read_baseline,
)
from pytest_quantgate.summary import GroupResult, Summary, VariantRow

NAME = "quantgate-baseline.json"
FIX = "; rewrite it with pytest --quant-update-baseline"
GROUP = "test_tiny.py"

# One case that passes and one that misses, so both outcomes are in the blessed file.
TINY = """
import pytest
pytestmark = pytest.mark.quant_rubric(accuracy=0.5)

def test_echo(quant_model):
    assert isinstance(quant_model.generate("1, 2, 3,", max_tokens=4), str)

def test_never(quant_model):
    assert "zq-never-zq" in quant_model.generate("a, b, c,", max_tokens=4)
"""


def _write_project(where: Path, ladder: Ladder) -> None:
    config = {
        "model": "SmolLM2-135M-Instruct",
        "variants": {"Q2_K": str(ladder.files["Q2_K"])},
        "llama": {"n_ctx": 256, "n_threads": 2, "seed": 0},
        "generation": {"max_tokens": 4},
    }
    (where / "quantgate.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (where / GROUP).write_text(TINY)


@pytest.fixture(scope="module")
def blessed(ladder: Ladder, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline written by a real ``--quant-update-baseline`` run, shared by the module."""
    where = tmp_path_factory.mktemp("qg-blessed")
    _write_project(where, ladder)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["HOME"] = str(where)  # as pytester isolates its runs
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-o", f"cache_dir={shared_cache}",
         "--quant-update-baseline"],
        cwd=where, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    path = where / NAME
    assert path.is_file(), run.stdout
    return path


def _project(project: Project, content: bytes) -> Path:
    _write_project(project.path, project.ladder)
    path = project.path / NAME
    path.write_bytes(content)
    return path


Edit = Callable[[dict[str, Any]], None]


def _cases(d: dict[str, Any]) -> dict[str, Any]:
    cases: dict[str, Any] = d["variants"]["Q2_K"]["groups"][GROUP]["cases"]
    return cases


def _set_first_outcome(d: dict[str, Any]) -> None:
    cases = _cases(d)
    cases[sorted(cases)[0]] = "pass"


def _edited(text: str, edit: Edit) -> bytes:
    data = json.loads(text)
    edit(data)
    return json.dumps(data, indent=1).encode()


def _latin1(text: str) -> bytes:
    """The file with a non-UTF-8 byte: an editor saved the file type as latin-1 ``Q2_K\xe9``."""
    out = text.replace('"file_type": "Q2_K"', '"file_type": "Q2_K\xe9"').encode("latin-1")
    assert b"\xe9" in out
    return out


FIRST_CASE = f"{GROUP}::test_echo"
CORRUPTIONS: dict[str, tuple[Callable[[str], bytes], str]] = {
    # id: (text -> corrupted bytes, what the error line says after the file name)
    "variant-is-array": (
        lambda t: _edited(t, lambda d: d["variants"].__setitem__("Q2_K", [])),
        "variants.Q2_K: expected an object, got array" + FIX),
    "files-is-array": (
        lambda t: _edited(t, lambda d: d["fingerprint"].__setitem__(
            "files", list(d["fingerprint"]["files"].values()))),
        "fingerprint.files: expected an object, got array" + FIX),
    "case-sets-null": (
        lambda t: _edited(t, lambda d: d["fingerprint"].__setitem__("case_sets", None)),
        "fingerprint.case_sets: expected an object, got null" + FIX),
    "unknown-outcome": (
        lambda t: _edited(t, _set_first_outcome),
        f'variants.Q2_K.groups["{GROUP}"].cases["{FIRST_CASE}"]: expected passed, miss, failed or '
        'error, got string "pass"' + FIX),
    "cases-is-array": (
        lambda t: _edited(t, lambda d: d["variants"]["Q2_K"]["groups"][GROUP].__setitem__(
            "cases", sorted(_cases(d)))),
        f'variants.Q2_K.groups["{GROUP}"].cases: expected an object, got array' + FIX),
    "not-utf8": (_latin1, "not UTF-8 text (byte 0xe9 at offset *)" + FIX),
}


def _error_line(result: pytest.RunResult) -> str:
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    errors = [line for line in result.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, out
    return errors[0]


def test_the_blessed_baseline_reads_back_as_written(blessed: Path) -> None:
    text = blessed.read_text(encoding="utf-8")
    data = read_baseline(blessed)
    assert data == json.loads(text)
    assert data["schema"] == SCHEMA and set(data["variants"]) == {"Q2_K"}
    assert _cases(data) == {f"{GROUP}::test_echo": "passed", f"{GROUP}::test_never": "miss"}
    assert set(data["fingerprint"]["case_sets"]) == {GROUP}
    # the test's corruption of the first case targets what the run wrote
    assert sorted(_cases(data))[0] == FIRST_CASE


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_baseline_is_one_usage_error_naming_the_key(
        project: Project, blessed: Path, corruption: str) -> None:
    corrupt, message = CORRUPTIONS[corruption]
    path = _project(project, corrupt(blessed.read_text(encoding="utf-8")))
    with pytest.raises(BaselineError):
        read_baseline(path)
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    line = _error_line(result)
    prefix = f"ERROR: {path}: "
    assert line.startswith(prefix), line
    if "*" in message:  # the offset of the bad byte
        head, tail = message.split("*")
        assert line[len(prefix):].startswith(head) and line.endswith(tail), line
    else:
        assert line == prefix + message


@pytest.mark.parametrize("corruption", ["variant-is-array", "not-utf8"])
def test_update_replaces_a_corrupt_baseline(project: Project, blessed: Path, corruption: str) -> None:
    corrupt, _ = CORRUPTIONS[corruption]
    path = _project(project, corrupt(blessed.read_text(encoding="utf-8")))
    result = project.run("--quant-update-baseline")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    result.stdout.fnmatch_lines([f"baseline written: {path}"])
    written = read_baseline(path)
    assert set(written["variants"]) == {"Q2_K"}
    assert set(_cases(written)) == set(_cases(read_baseline(blessed)))


# -- the validator in process: no model needed -----------------------------------------------


def _summary() -> Summary:
    """A run with what the real ladder rarely gives: no accuracy, no figures, a skipped case."""
    def group(key: str, outcomes: dict[str, str], accuracy: float | None) -> GroupResult:
        return GroupResult(group=key, variant="Q4_K_M-imat", thresholds={}, cases=len(outcomes),
                           passed_cases=0, misses=0, failures=0, accuracy=accuracy,
                           tokens_per_second=None, passed=accuracy is not None,
                           reasons=[], case_outcomes=outcomes)

    groups = {
        "t.py": group("t.py", {"t.py::a[Q4_K_M-imat-x]": "passed", "t.py::b[Q4_K_M-imat]": "miss",
                               "t.py::c[Q4_K_M-imat]": "failed", "t.py::d[Q4_K_M-imat]": "error",
                               "t.py::e[Q4_K_M-imat]": "skipped"}, 0.25),
        "u.py": group("u.py", {"u.py::s[Q4_K_M-imat]": "skipped"}, None),
    }
    row = VariantRow(name="Q4_K_M-imat", file_type="Q4_K_M", path="/m.gguf", sha256="ab" * 32,
                     size_bytes=1000, loads=1, load_seconds=None, memory_mb=None,
                     tokens_per_second=None, decode_tokens_per_second=None,
                     prompt_tokens_per_second=None, groups=groups, failed_tests=[], passed=True,
                     reasons=[])
    return Summary(rows=[row], groups=list(groups), smallest_passing=None,
                   smallest_passing_by_group={}, gate="all",
                   environment={"llama_cpp_python": "0.3.0"})


@pytest.fixture
def valid() -> dict[str, Any]:
    return build_baseline(_summary(), [], {"n_ctx": 256, "use_mmap": True, "chat_format": "chatml"},
                          {"max_tokens": 4, "temperature": 0.0})


def _read(tmp_path: Path, content: bytes | str) -> str:
    path = tmp_path / NAME
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(BaselineError) as info:
        read_baseline(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message[len(f"{path}: "):]


def test_build_baseline_output_round_trips_with_nulls_and_every_outcome(
        tmp_path: Path, valid: dict[str, Any]) -> None:
    from pytest_quantgate.baseline import write_baseline

    path = tmp_path / NAME
    write_baseline(path, valid)
    assert read_baseline(path) == valid
    group = valid["variants"]["Q4_K_M-imat"]["groups"]
    assert set(group["t.py"]["cases"].values()) == set(OUTCOMES)
    assert group["u.py"] == {"accuracy": None, "thresholds": {}, "cases": {}}
    assert valid["fingerprint"]["llama_cpp_system_info"] is None
    # a byte-order mark an editor added is tolerated
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_baseline(path) == valid


V = 'variants["Q4_K_M-imat"]'  # not a plain name: quoted
SHAPES: list[tuple[str, Edit, str]] = [
    ("bool-for-number", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"]["thresholds"].__setitem__(
        "accuracy", True),
     f'{V}.groups["t.py"].thresholds.accuracy: expected a finite number, got boolean true'),
    ("nan", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"]["thresholds"].__setitem__(
        "accuracy", float("nan")),
     f'{V}.groups["t.py"].thresholds.accuracy: expected a finite number, got number NaN'),
    ("infinite-accuracy", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"].__setitem__(
        "accuracy", float("inf")),
     f'{V}.groups["t.py"].accuracy: expected a number from 0 to 1 or null, got number Infinity'),
    ("accuracy-out-of-range", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"].__setitem__(
        "accuracy", 25),
     f'{V}.groups["t.py"].accuracy: expected a number from 0 to 1 or null, got number 25'),
    ("passed-string", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"].__setitem__("passed", "yes"),
     f'{V}.groups["t.py"].passed: expected a boolean, got string "yes"'),
    ("negative-size", lambda d: d["variants"]["Q4_K_M-imat"].__setitem__("size_bytes", -1),
     f"{V}.size_bytes: expected a whole number >= 0, got number -1"),
    ("fractional-size", lambda d: d["variants"]["Q4_K_M-imat"].__setitem__("size_bytes", 1.5),
     f"{V}.size_bytes: expected a whole number >= 0, got number 1.5"),
    ("file-type-null", lambda d: d["variants"]["Q4_K_M-imat"].__setitem__("file_type", None),
     f"{V}.file_type: expected a string, got null"),
    ("missing-cases", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"].pop("cases"),
     f'{V}.groups["t.py"].cases: missing'),
    ("missing-groups", lambda d: d["variants"]["Q4_K_M-imat"].pop("groups"), f"{V}.groups: missing"),
    ("figures-array", lambda d: d["variants"]["Q4_K_M-imat"].__setitem__("figures", [1, 2]),
     f"{V}.figures: expected an object, got array"),
    ("variants-array", lambda d: d.__setitem__("variants", []), "variants: expected an object, got array"),
    ("fingerprint-string", lambda d: d.__setitem__("fingerprint", "x"),
     'fingerprint: expected an object, got string "x"'),
    ("missing-case-sets", lambda d: d["fingerprint"].pop("case_sets"), "fingerprint.case_sets: missing"),
    ("file-hash-number", lambda d: d["fingerprint"]["files"].__setitem__("Q4_K_M-imat", 12),
     'fingerprint.files["Q4_K_M-imat"]: expected a string, got number 12'),
    ("case-set-null", lambda d: d["fingerprint"]["case_sets"].__setitem__("t.py", None),
     'fingerprint.case_sets["t.py"]: expected a string, got null'),
    ("version-number", lambda d: d["fingerprint"].__setitem__("llama_cpp_python", 3),
     "fingerprint.llama_cpp_python: expected a string or null, got number 3"),
    ("nested-llama-parameter", lambda d: d["fingerprint"]["llama"].__setitem__("n_ctx", {"a": 1}),
     "fingerprint.llama.n_ctx: expected a string, number, boolean or null, got object"),
    ("generation-array", lambda d: d["fingerprint"].__setitem__("generation", []),
     "fingerprint.generation: expected an object, got array"),
    ("skipped-outcome", lambda d: d["variants"]["Q4_K_M-imat"]["groups"]["t.py"]["cases"].__setitem__(
        "t.py::e", "skipped"),
     f'{V}.groups["t.py"].cases["t.py::e"]: expected passed, miss, failed or error, got string "skipped"'),
    ("schema-true", lambda d: d.__setitem__("schema", True), "schema: expected 1, got boolean true"),
    ("schema-string", lambda d: d.__setitem__("schema", "1"), 'schema: expected 1, got string "1"'),
]


@pytest.mark.parametrize(("edit", "expected"), [(e, x) for _, e, x in SHAPES], ids=[i for i, _, _ in SHAPES])
def test_each_shape_error_names_its_key_path(tmp_path: Path, valid: dict[str, Any], edit: Edit,
                                             expected: str) -> None:
    data = copy.deepcopy(valid)
    edit(data)
    assert _read(tmp_path, json.dumps(data)) == expected + FIX


def test_a_newer_schema_says_to_upgrade(tmp_path: Path, valid: dict[str, Any]) -> None:
    assert _read(tmp_path, json.dumps({**valid, "schema": SCHEMA + 1})) == (
        f"schema: {SCHEMA + 1} is newer than this pytest-quantgate reads ({SCHEMA}); upgrade "
        "pytest-quantgate or rewrite it with pytest --quant-update-baseline")


def test_a_long_bad_value_is_cut_short(tmp_path: Path, valid: dict[str, Any]) -> None:
    valid["variants"]["Q4_K_M-imat"]["file_type"] = ["x" * 10_000]
    assert _read(tmp_path, json.dumps(valid)) == f"{V}.file_type: expected a string, got array" + FIX
    valid["variants"]["Q4_K_M-imat"]["file_type"] = "Q4_K_M"
    valid["variants"]["Q4_K_M-imat"]["groups"]["t.py"]["cases"]["t.py::a[x]"] = "y" * 10_000
    message = _read(tmp_path, json.dumps(valid))
    assert len(message) < 250, message
    assert f'{V}.groups["t.py"].cases["t.py::a[x]"]: expected passed, miss, failed or error, got string "yyy' in message
    assert message.endswith('yyy...' + FIX), message
    key = "k" * 10_000
    valid["variants"]["Q4_K_M-imat"]["groups"]["t.py"]["cases"] = {key: 1}
    assert len(_read(tmp_path, json.dumps(valid))) < 250


def test_a_key_written_twice_is_named(tmp_path: Path, valid: dict[str, Any]) -> None:
    # what a hand-resolved merge conflict leaves: json.loads would keep the last one silently
    text = json.dumps(valid, indent=1, sort_keys=True)
    twice = text.replace('"t.py::a[x]": "passed",', '"t.py::a[x]": "passed",\n"t.py::a[x]": "miss",')
    assert twice != text
    assert _read(tmp_path, twice) == (
        f'{V}.groups["t.py"].cases: key "t.py::a[x]" appears more than once' + FIX)


@pytest.mark.parametrize(("content", "expected"), [
    (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)" + FIX),
    (b'{"schema": 1,', "not valid JSON (line 1)" + FIX),
    (b"[" * 100_000, "not valid JSON (*)" + FIX),
    (b'{"x": ' + b"9" * 5000 + b"}", "not valid JSON (*)" + FIX),
    (b"[]", f"not a quantgate baseline (schema {SCHEMA})" + FIX),
    (b"null", f"not a quantgate baseline (schema {SCHEMA})" + FIX),
    (b'{"schema": 1, "variants": {}}', f"not a quantgate baseline (schema {SCHEMA})" + FIX),
], ids=["utf16", "truncated", "deep", "huge-integer", "array", "null", "no-fingerprint"])
def test_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    message = _read(tmp_path, content)
    head, _, tail = expected.partition("*")
    assert message.startswith(head) and message.endswith(tail) and len(message) < 250, message


def test_a_directory_is_not_a_baseline(tmp_path: Path) -> None:
    (tmp_path / NAME).mkdir()
    with pytest.raises(BaselineError, match=r": cannot read: "):
        read_baseline(tmp_path / NAME)
