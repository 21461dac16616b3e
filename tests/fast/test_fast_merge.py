"""``quantgate merge``: per-variant reports merge into the single run's summary and exit code;
reports that do not describe the same experiment, and files that are not reports, are
refused with one line naming the files (exit 2). No model: reports come from the fake backend
or are built in process from the same records a session keeps."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from pytest_quantgate.cli import main
from pytest_quantgate.records import CaseRecord, Verdict
from pytest_quantgate.report import RunRecord, document
from pytest_quantgate.stats import wilson
from pytest_quantgate.summary import build_summary

from .fake_project import FakeProject, echo_cases

GROUP = "test_qa.py"
SIZES = {"F16": 800_000, "Q8_0": 400_000, "Q4_K_M": 200_000, "Q2_K": 100_000}
SHA = {name: c * 64 for name, c in zip(SIZES, "f842", strict=True)}
ENV = {"llama_cpp_python": "0.3.36", "llama_cpp_system_info": "CPU : AVX2 = 1 | FMA = 1 |",
       "llama": {"n_ctx": 256, "n_threads": 1, "seed": 0},
       "generation": {"max_tokens": 64, "temperature": 0.0}, "cpu": "some CPU"}
ALL_PASS = {"alpha": "passed", "beta": "passed", "gamma": "passed", "delta": "passed"}
TWO_MISSES = {"alpha": "passed", "beta": "miss", "gamma": "miss", "delta": "passed"}


def shard(outcomes: dict[str, dict[str, str]], *, accuracy: float = 0.75, run: bool = True,
          ungrouped: dict[str, str] | None = None, incomplete: bool = False, gate: str = "all",
          preflight: dict[str, str] | None = None, **env: Any) -> dict[str, Any]:
    """A report as a session writes it: variant -> {word: outcome} of the echo group judged on
    ``accuracy``, ``ungrouped`` cases (word -> outcome) outside any group for every variant, the
    reference F16 preflighted always. ``run=False``: a report from before the rows listed their
    cases and the run recorded its stats and hashes."""
    cases: list[CaseRecord] = []
    verdicts: dict[tuple[str, str], Verdict] = {}
    for v, words in outcomes.items():
        mine = [CaseRecord(f"{GROUP}::test_echo[{v}-{w}]", v, GROUP, o, "" if o == "passed" else f"expected {w}",
                           ({"op": "generate", "prompt": w, "reply": w if o == "passed" else "?"},))
                for w, o in words.items()]
        mine += [CaseRecord(f"test_plain.py::test_p[{v}-{w}]", v, None, o, "why not" if o == "skipped" else "")
                 for w, o in (ungrouped or {}).items()]
        cases += mine
        ran = [c for c in mine if c.group and c.outcome != "skipped"]
        if not ran:
            continue
        k = sum(c.outcome == "passed" for c in ran)
        acc = k / len(ran)
        reasons = [] if acc >= accuracy else [f"accuracy {acc:.2f} < {accuracy:.2f} ({k}/{len(ran)} cases)"]
        verdicts[(GROUP, v)] = Verdict(GROUP, v, {"accuracy": accuracy}, cases=len(ran), passed_cases=k,
                                       misses=len(ran) - k, accuracy=acc, accuracy_ci=list(wilson(k, len(ran))),
                                       disk_mb=SIZES[v] / 1e6, reasons=reasons, passed=not reasons)
    info: dict[str, dict[str, Any]] = {v: {"name": v, "path": f"/models/{v}.gguf", "file_type": v, "sha256": SHA[v],
                "size_bytes": SIZES[v],
                "stats": {"loads": 1, "memory_mb": 50.0, "load_seconds": 0.1, "tokens_per_second": 100.0,
                          "future_figure": {"kept": True}}} for v in outcomes}
    environment = {**ENV, **env}
    summary = build_summary(variants=info, cases=cases, verdicts=verdicts, gate=gate,
                            incomplete=incomplete, environment=environment, reference="F16")
    record = RunRecord(preflight or {"F16": SHA["F16"], **{v: SHA[v] for v in outcomes}},
                       {v: i["stats"] for v, i in info.items()}) if run else None
    doc = dict(json.loads(json.dumps(  # as it comes back from a file
        document(summary, model="tiny", config="quantgate.yaml", reference="F16", run=record))))
    if not run:  # as written before rows listed their cases
        for row in doc["variants"]:
            del row["cases"]
    return doc


def write(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    p = tmp / name
    p.write_text(json.dumps(doc))
    return p


def merge(capsys: pytest.CaptureFixture[str], *args: Path | str) -> tuple[int, str, str]:
    rc = main(["merge", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(capsys: pytest.CaptureFixture[str], *args: Path | str) -> str:
    """The one line of a refusal (exit 2, nothing on stdout)."""
    rc, out, err = merge(capsys, *args)
    assert rc == 2, out + err
    assert out == "" and err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("quantgate merge: error: ")
    return err.strip().removeprefix("quantgate merge: error: ")


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """What a merge must reproduce exactly: figures that vary run to run left out."""
    return {
        "smallest_passing": report["smallest_passing"],
        "by_group": report["smallest_passing_by_group"],
        "groups": report["groups"],
        "incomplete": report["incomplete"],
        "rows": [(v["name"], v["passed"], v["reasons"], v["failed_tests"],
                  {g: (gr["passed"], gr["accuracy"], gr["cases"], gr["misses"], gr["reasons"], gr["case_outcomes"],
                       gr.get("flips"))
                   for g, gr in v["groups"].items()}) for v in report["variants"]],
    }


# -- merging reports written by pytest ------------------------------------------------------------
def test_per_variant_reports_merge_into_the_single_run(fake: FakeProject, capsys: pytest.CaptureFixture[str]) -> None:
    fake.config(reference="F16")  # flips against it: one run has it, the merge has its report
    fake.script(wrong={"Q2_K": {"beta": "x", "gamma": "y"}, "Q8_0": {"beta": "x"}})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5"),
                             test_size=echo_cases("disk_mb=0.3"),
                             test_plain="def test_plain(quant_model):\n    assert quant_model.variant\n")
    single, whole = fake.run_report()
    parts = []
    for name in ("F16", "Q8_0", "Q4_K_M", "Q2_K"):
        path = fake.path / f"{name}.json"
        fake.run(f"--quant-report={path}", f"--quant-variants={name}")
        parts.append(path)
    capsys.readouterr()
    out_path, md_path = fake.path / "merged.json", fake.path / "summary.md"
    rc, out, err = merge(capsys, *parts, "--out", out_path, "--markdown", md_path)
    assert err == ""
    assert rc == single.ret == 1  # Q2_K fails test_size's cases, F16 and Q8_0 its disk_mb
    merged = json.loads(out_path.read_text())
    assert comparable(merged) == comparable(whole)
    assert merged["smallest_passing"] == "Q4_K_M"
    assert merged["smallest_passing_by_group"] == {"test_qa.py": "Q2_K", "test_size.py": "Q4_K_M"}
    # the same terminal table as the pytest run, but for the load times
    table = [line for line in single.outlines if line.startswith(("variant ", "Q", "F16 ", "smallest", "  test_"))]
    assert [_no_load(line) for line in out.splitlines()] == [_no_load(line) for line in table]
    assert md_path.read_text().startswith("### quantgate\n")
    assert "**smallest passing variant: Q4_K_M (0.2 MB)**" in md_path.read_text()
    # the merged report is a report: it merges again, alone, to the same summary
    rc_again, out_again, _ = merge(capsys, out_path)
    assert (rc_again, out_again) == (rc, out)


def _no_load(line: str) -> str:
    words = line.split()
    return " ".join(words[:3] + words[4:]) if words and words[0] in SIZES else line


# -- merging built reports: the merge logic -------------------------------------------------------
def test_gate_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q4 = write(tmp_path, "q4.json", shard({"Q4_K_M": ALL_PASS}))
    q2 = write(tmp_path, "q2.json", shard({"Q2_K": TWO_MISSES}))
    q8 = write(tmp_path, "q8.json", shard({"Q8_0": ALL_PASS}))
    rc, out, _ = merge(capsys, q4, q8)
    assert rc == 0 and out.splitlines()[-1] == "smallest passing variant: Q4_K_M (0.2 MB)"
    rc, out, _ = merge(capsys, q8, q2, q4)
    assert rc == 1 and out.splitlines()[-1] == "smallest passing variant: Q4_K_M (0.2 MB)"
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["Q2_K", "Q4_K_M", "Q8_0"]  # smallest first
    any_q4 = write(tmp_path, "any-q4.json", shard({"Q4_K_M": ALL_PASS}, gate="any"))
    any_q2 = write(tmp_path, "any-q2.json", shard({"Q2_K": TWO_MISSES}, gate="any"))
    assert merge(capsys, any_q4, any_q2)[0] == 0  # --quant-gate=any: one passing rung is enough
    assert merge(capsys, any_q2)[0] == 1
    assert "different gate (--quant-gate): 'all' vs 'any'" in refused(capsys, q4, any_q2)


def test_an_incomplete_report_makes_the_merge_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q4 = write(tmp_path, "q4.json", shard({"Q4_K_M": ALL_PASS}))
    cut = write(tmp_path, "q8.json", shard({"Q8_0": {"alpha": "passed", "beta": "passed"}}, incomplete=True))
    rc, out, _ = merge(capsys, q4, cut, "--out", tmp_path / "m.json")
    assert rc == 1  # a run that stopped early does not pass the gate
    assert "run incomplete: figures cover only the tests that finished" in out
    assert json.loads((tmp_path / "m.json").read_text())["incomplete"] is True
    # an incomplete run may miss cases, never have others
    extra = write(tmp_path, "q2.json", shard({"Q2_K": {**ALL_PASS, "omega": "passed"}}, incomplete=True))
    assert refused(capsys, q4, extra) == (f"{q4} and {extra}: different case sets: test_qa.py: "
                                         f"0 only in {q4}, 1 only in {extra} (omega)")


def test_fields_of_verdicts_and_stats_survive_the_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = [shard({"Q4_K_M": ALL_PASS}, ungrouped={"one": "passed"}),
            shard({"Q2_K": TWO_MISSES}, ungrouped={"one": "passed"})]
    paths = [write(tmp_path, f"{i}.json", d) for i, d in enumerate(docs)]
    assert merge(capsys, *paths, "--out", tmp_path / "m.json")[0] == 1
    merged = json.loads((tmp_path / "m.json").read_text())
    rows = {r["name"]: r for d in docs for r in d["variants"]}
    for row in merged["variants"]:
        before = rows[row["name"]]
        for f in fields(Verdict):  # every field, including ones added after this test
            assert row["groups"][GROUP][f.name] == before["groups"][GROUP][f.name], f.name
        assert row["stats"]["future_figure"] == {"kept": True}  # stats pass through unread
        assert row["cases"] == before["cases"]  # transcripts too
    assert merged["variant_sha256"] == {"F16": SHA["F16"], "Q4_K_M": SHA["Q4_K_M"], "Q2_K": SHA["Q2_K"]}
    assert merged["merged_from"] == [str(p) for p in paths]


def test_an_ungrouped_variant_keeps_its_no_evidence_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A variant whose plain tests all skipped is no pass: the reason quotes the skip's message,
    which only the per-case records keep."""
    doc = shard({"Q4_K_M": {}}, ungrouped={"one": "skipped"})
    (row,) = doc["variants"]
    assert row["reasons"] == ["no verdict: none of its 1 test(s) was evaluated, all skipped: why not"]
    rc, out, _ = merge(capsys, write(tmp_path, "q4.json", doc))
    assert rc == 1 and "FAIL: no verdict: none of its 1 test(s) was evaluated, all skipped: why not" in out
    old = shard({"Q4_K_M": {}}, ungrouped={"one": "skipped"}, run=False)  # no per-case records
    old_path = write(tmp_path, "old.json", old)
    assert refused(capsys, old_path) == (
        f"{old_path}: variant Q4_K_M: the recorded verdict (FAIL) does not follow from its recorded "
        "groups and cases ('nothing') (an older report without its rows' cases: rerun with this version)")


def test_reports_without_per_case_records_merge_on_their_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = [shard({"Q4_K_M": ALL_PASS}), shard({"Q2_K": TWO_MISSES})]
    old = [shard({"Q4_K_M": ALL_PASS}, run=False), shard({"Q2_K": TWO_MISSES}, run=False)]
    assert "cases" not in old[0]["variants"][0] and "variant_sha256" not in old[0]
    for i, docs in enumerate((new, old)):
        merge(capsys, *(write(tmp_path, f"{i}-{j}.json", d) for j, d in enumerate(docs)), "--out", tmp_path / f"m{i}.json")
    assert comparable(json.loads((tmp_path / "m0.json").read_text())) == comparable(json.loads((tmp_path / "m1.json").read_text()))


# -- refusals: not the same experiment -------------------------------------------------------------
FINGERPRINT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("llama-cpp-python", {"llama_cpp_python": "0.3.35"}, "different llama-cpp-python version: '0.3.36' vs '0.3.35'"),
    ("system info", {"llama_cpp_system_info": "CPU : AVX512 = 1 |"},
     "different llama.cpp system info: 'CPU : AVX2 = 1 | FMA = 1 |' vs 'CPU : AVX512 = 1 |'"),
    ("llama", {"llama": {"n_ctx": 512, "n_threads": 1, "seed": 0}}, "different llama settings: n_ctx 256 vs 512"),
    ("generation", {"generation": {"max_tokens": 8, "temperature": 0.0}},
     "different generation settings: max_tokens 64 vs 8"),
    ("generation key", {"generation": {"max_tokens": 64, "temperature": 0.0, "top_k": 40}},
     "different generation settings: top_k unset vs 40"),
]


@pytest.mark.parametrize(("what", "env", "message"), FINGERPRINT_CASES, ids=[c[0] for c in FINGERPRINT_CASES])
def test_refuses_another_llama_cpp_or_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               what: str, env: dict[str, Any], message: str) -> None:
    a = write(tmp_path, "a.json", shard({"Q4_K_M": ALL_PASS}))
    b = write(tmp_path, "b.json", shard({"Q2_K": TWO_MISSES}, **env))
    assert refused(capsys, a, b) == f"{a} and {b}: {message}"


def test_refuses_another_model_reference_or_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", shard({"Q4_K_M": ALL_PASS}))
    for key, value, message in (("model", "other", "different model: 'tiny' vs 'other'"),
                                ("reference", "Q8_0", "different reference: 'F16' vs 'Q8_0'"),
                                ("quantgate", "9.9", "different pytest-quantgate version: ")):
        b = write(tmp_path, "b.json", {**shard({"Q2_K": TWO_MISSES}), key: value})
        assert refused(capsys, a, b).startswith(f"{a} and {b}: {message}")


def test_refuses_another_file_under_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference is preflighted by every job without being a row in them: its hash is
    compared all the same (reference and fidelity gates depend on its file)."""
    a = write(tmp_path, "a.json", shard({"Q4_K_M": ALL_PASS}))
    b = write(tmp_path, "b.json", shard({"Q2_K": TWO_MISSES}, preflight={"F16": "e" * 64, "Q2_K": SHA["Q2_K"]}))
    assert refused(capsys, a, b) == f"{a} and {b}: variant F16 is a different file (sha256 ffffffffffff vs eeeeeeeeeeee)"
    # a row's file against another report's preflight of the same name
    c = write(tmp_path, "c.json", shard({"Q2_K": TWO_MISSES}, preflight={"F16": SHA["F16"], "Q4_K_M": "0" * 64}))
    assert refused(capsys, a, c) == f"{a} and {c}: variant Q4_K_M is a different file (sha256 444444444444 vs 000000000000)"


def test_refuses_different_case_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", shard({"Q4_K_M": ALL_PASS}))
    fewer = write(tmp_path, "b.json", shard({"Q2_K": {"alpha": "passed", "beta": "miss", "gamma": "miss"}}))
    assert refused(capsys, a, fewer) == (f"{a} and {fewer}: different case sets: test_qa.py: "
                                         f"1 only in {a} (delta), 0 only in {fewer}")
    other = write(tmp_path, "c.json", shard({"Q2_K": {"alpha": "passed", "beta": "miss", "gamma": "miss", "zeta": "passed"}}))
    assert refused(capsys, a, other) == (f"{a} and {other}: different case sets: test_qa.py: "
                                         f"1 only in {a} (delta), 1 only in {other} (zeta)")
    # tests outside any group count too, when both reports list their cases
    plain = write(tmp_path, "d.json", shard({"Q2_K": TWO_MISSES}, ungrouped={"one": "passed"}))
    assert refused(capsys, a, plain) == (f"{a} and {plain}: different case sets: (tests without a rubric): "
                                         f"0 only in {a}, 1 only in {plain} (one)")


def test_refuses_another_rubric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", shard({"Q4_K_M": ALL_PASS}))
    b = write(tmp_path, "b.json", shard({"Q2_K": TWO_MISSES}, accuracy=0.5))
    assert refused(capsys, a, b) == f"{a} and {b}: different rubric for test_qa.py: accuracy 0.75 vs 0.5"


def test_refuses_a_variant_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = write(tmp_path, "both.json", shard({"Q4_K_M": ALL_PASS, "Q2_K": TWO_MISSES}))
    q2 = write(tmp_path, "q2.json", shard({"Q2_K": TWO_MISSES}))
    assert refused(capsys, both, q2) == f"{both} and {q2}: variant Q2_K is in both (merge one report per variant)"
    assert refused(capsys, q2, tmp_path / "." / "q2.json") == f"{tmp_path / '.' / 'q2.json'}: given twice (as {q2} too)"


def test_refuses_to_write_over_an_input_or_a_lost_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q4 = write(tmp_path, "q4.json", shard({"Q4_K_M": ALL_PASS}))
    assert refused(capsys, q4, "--out", q4) == f"--out: {q4} is one of the reports being merged"
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, out, err = merge(capsys, q4, "--markdown", blocker / "summary.md")
    assert rc == 2 and out.startswith("variant ")  # the table was printed, the output is lost
    assert err.startswith(f"quantgate merge: error: --markdown: cannot write {blocker / 'summary.md'}: ")


# -- refusals: not a report ----------------------------------------------------------------------
def test_refuses_files_that_are_not_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert refused(capsys, missing) == f"{missing}: cannot read: No such file or directory"
    assert refused(capsys, tmp_path) == f"{tmp_path}: cannot read: Is a directory"
    cases = {"junk.json": (b"{not json", "not a quantgate report (invalid JSON: "),
             "nan.json": (b'{"schema": NaN}', "not a quantgate report (invalid JSON: NaN is not JSON"),
             "latin1.json": ('{"model": "caf\u00e9"}'.encode("latin-1"), "not a quantgate report (not UTF-8 text)"),
             "list.json": (b"[1, 2]", "not a quantgate report (a JSON list, expected an object)"),
             "deep.json": (b"[" * 100_000 + b"]" * 100_000, "not a quantgate report (JSON nested too deeply)"),
             "other.json": (b'{"hello": 1}', "not a quantgate report (no schema or variants"),
             "v2.json": (json.dumps({**shard({"Q4_K_M": ALL_PASS}), "schema": 2}).encode(),
                         "report schema 2; this quantgate reads schema 1")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert refused(capsys, tmp_path / name).startswith(f"{tmp_path / name}: {message}"), name


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a report: the value at ``path`` (keys and list indexes) replaced, or deleted
    when ``value`` is None."""
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path
        node: Any = doc
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return apply


G = ("variants", 0, "groups", GROUP)
SHAPE_CASES: list[tuple[str, tuple[str | int, ...], Any, str]] = [
    ("gate", ("gate",), "some", "gate: expected all or any, got 'some'"),
    ("incomplete", ("incomplete",), "no", "incomplete: expected bool, got 'no'"),
    ("no variants list", ("variants",), {"Q4_K_M": {}}, "variants: expected list[dict[str, Any]]"),
    ("row name missing", ("variants", 0, "name"), None, "variants[0].name: missing"),
    ("size as text", ("variants", 0, "size_bytes"), "200", "variants[0].size_bytes: expected int, got '200'"),
    ("passed as number", ("variants", 0, "passed"), 1, "variants[0].passed: expected bool, got 1"),
    ("reasons not text", ("variants", 0, "reasons"), [1], "variants[0].reasons: expected list[str], got [1]"),
    ("group not an object", G, "ok", "variants[0].groups: expected dict[str, dict[str, Any]], got {"),
    ("accuracy as text", (*G, "accuracy"), "1.0",
     "variants[0] (Q4_K_M).groups['test_qa.py'].accuracy: expected float | None, got '1.0'"),
    ("an outcome we do not know", (*G, "case_outcomes"), {"x": "exploded"},
     "variants[0] (Q4_K_M).groups['test_qa.py'].case_outcomes: expected outcomes among "),
    ("another variant's group", (*G, "variant"), "Q2_K", "variants[0] (Q4_K_M).groups['test_qa.py']: names another "),
    ("interval of three", (*G, "accuracy_ci"), [0.1, 0.2, 0.3], "variants[0] (Q4_K_M).groups['test_qa.py'].accuracy_ci: expected [low, high]"),
    ("baseline without fixes", (*G, "baseline"), {"regressions": [], "added": [], "removed": []},
     "variants[0] (Q4_K_M).groups['test_qa.py'].baseline.fixes: missing"),
    ("fidelity without KLD", (*G, "fidelity"), {"positions": 10, "reference": "F16"},
     "variants[0] (Q4_K_M).groups['test_qa.py'].fidelity.mean_kld: missing"),
    ("a case of no group", ("variants", 0, "cases", 0, "group"), "test_nope.py",
     "variants[0] (Q4_K_M).cases[0]: unknown outcome or group"),
    ("a transcript of text", ("variants", 0, "cases", 0, "calls"), ["hi"],
     "variants[0] (Q4_K_M).cases[0].calls: expected list[dict[str, Any]], got ['hi']"),
    ("stats not an object", ("variants", 0, "stats"), [], "variants[0] (Q4_K_M).stats: expected an object"),
    ("hash map of numbers", ("variant_sha256",), {"F16": 1}, "variant_sha256: expected dict[str, str]"),
    ("negative failures", ("other_failures",), -1, "other_failures: expected a count"),
    ("a pass that its groups deny", ("variants", 0, "passed"), False,
     "variant Q4_K_M: the recorded verdict (FAIL) does not follow from its recorded groups and cases ('pass')"),
    ("an outcome its verdict did not see", (*G, "case_outcomes", "test_qa.py::test_echo[Q4_K_M-alpha]"), "miss",
     "variant Q4_K_M: the recorded verdict (pass) does not follow from its recorded groups and cases ('pass')"),
    ("another smallest passing", ("smallest_passing",), "Q2_K", "smallest_passing is 'Q2_K' but its rows say 'Q4_K_M'"),
]


@pytest.mark.parametrize(("what", "path", "value", "message"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_refuses_a_report_of_the_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             what: str, path: tuple[str | int, ...], value: Any,
                                             message: str) -> None:
    doc = copy.deepcopy(shard({"Q4_K_M": ALL_PASS}))
    _set(path, value)(doc)
    p = write(tmp_path, "bad.json", doc)
    assert refused(capsys, p).startswith(f"{p}: {message}")


def test_merge_needs_no_llama_cpp(tmp_path: Path) -> None:
    """The CI merge job installs only pytest and pyyaml (github-matrix.yml): no model library."""
    q4 = write(tmp_path, "q4.json", shard({"Q4_K_M": ALL_PASS}))
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('llama_cpp', 'numpy', 'gguf', 'psutil'):\n"
            "            raise ImportError(f'{name} is not installed in the merge job')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from pytest_quantgate.cli import main\n"
            f"sys.exit(main(['merge', {str(q4)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "smallest passing variant: Q4_K_M (0.2 MB)"
