"""Helpers for the fast tier: tiny GGUF files that pass the plugin's preflight, and a user
project (in a pytester dir) whose conftest.py serves every variant from a scripted fake
backend through the documented ``pytest_quantgate_load_model`` hook.

Nothing here loads llama.cpp or imports the plugin's internals: the only plugin name used is
``pytest_quantgate.backend.Completion``, inside the fake backend.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from gguf import GGUFWriter, TokenType

# name -> (general.file_type code, float32 elements in the size-setting tensor). A bigger
# "precision" is a bigger file, so disk sizes order the ladder like a real one.
RUNGS: dict[str, tuple[int, int]] = {
    "F16": (1, 200_000),  # ~0.80 MB
    "Q8_0": (7, 100_000),  # ~0.40 MB
    "Q4_K_M": (15, 50_000),  # ~0.20 MB
    "Q2_K": (10, 25_000),  # ~0.10 MB
}
N_EMBD = 16
N_LAYER = 2
N_HEAD = 2
# One vocabulary for every rung: the preflight refuses variants whose tokenizers differ.
TOKENS = ["<unk>", "<s>", "</s>", *(chr(c) for c in range(ord("a"), ord("z") + 1)),
          *(str(d) for d in range(10)), "\u2581the", "\u2581answer"]


@dataclass(frozen=True)
class TinyLadder:
    dir: Path
    files: dict[str, Path]  # F16, Q8_0, Q4_K_M, Q2_K -> path

    def size_mb(self, name: str) -> float:
        return self.files[name].stat().st_size / 1e6


def write_tiny_gguf(path: Path, file_type: int, n_floats: int, *, tokens: list[str] = TOKENS,
                    arch: str = "llama") -> Path:
    """A GGUF v3 file with llama metadata, a small tokenizer and a few F32 tensors."""
    w = GGUFWriter(path, arch)
    w.add_name("tiny")
    w.add_file_type(file_type)
    w.add_context_length(128)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(4 * N_EMBD)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([TokenType.CONTROL if t.startswith("<") else TokenType.NORMAL for t in tokens])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((len(tokens), N_EMBD), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("blk.0.ffn_up.weight", rng.standard_normal((n_floats // N_EMBD, N_EMBD), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_tiny_ladder(out: Path) -> TinyLadder:
    out.mkdir(parents=True, exist_ok=True)
    files = {name: write_tiny_gguf(out / f"tiny-{name.lower()}.gguf", ftype, n)
             for name, (ftype, n) in RUNGS.items()}
    return TinyLadder(out, files)


# The user's conftest.py in every fast project. Answers are a function of (variant, prompt):
# the fake echoes the prompt unless fake.json scripts another answer for that variant. Every
# load, call and close is appended to events.txt with the process id, so a test can check
# one load per variant and that each variant is closed before the next loads, also across
# xdist workers.
FAKE_CONFTEST = '''
import json
import os
from types import SimpleNamespace
from pathlib import Path

import pytest
from pytest_quantgate.backend import Completion

HERE = Path(__file__).resolve().parent
GEN_TOKENS = 10  # tokens "generated" per call; wall time = GEN_TOKENS / speed


def _script():
    path = HERE / "fake.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _event(*words):
    with open(HERE / "events.txt", "a", encoding="utf-8") as fh:
        fh.write(" ".join(str(w) for w in (*words, os.getpid())) + "\\n")


class FakeModel:
    llm = None  # the model is not a llama_cpp.Llama
    crashed = None

    def __init__(self, name, script):
        self.name = name
        self.wrong = script.get("wrong", {}).get(name, {})
        self.broken = script.get("raise", {}).get(name, [])
        self.wrong_seeds = script.get("wrong_seeds", {}).get(name, {})  # prompt -> seeds that miss
        self.batches = script.get("batch", True)  # has a batched decode of repeats
        self.speed = float(script.get("speed", {}).get(name, 100.0))
        # What the model reports, like a worker process measuring itself, so memory_mb is
        # deterministic; None: it does not measure itself (the plugin measures the process)
        memory = script.get("memory_mb", {}).get(name, 50.0)
        self.memory_bytes = None if memory is None else int(float(memory) * 1_000_000)
        self.closed = False

    def _completion(self, prompt, params=None, event="call"):
        _event(event, self.name, prompt)
        if self.closed:
            raise RuntimeError(f"{self.name} was called after close()")
        if prompt in self.broken:
            raise RuntimeError(f"{self.name} broke on {prompt}")
        text = self.wrong.get(prompt, prompt)
        params = params or {}
        if params.get("temperature", 0) > 0 and params.get("seed") in self.wrong_seeds.get(prompt, ()):
            text = "sampled wrong"  # sampling: this seed's answer misses
        return Completion(
            text=text, prompt_tokens=len(prompt), completion_tokens=GEN_TOKENS,
            wall_seconds=GEN_TOKENS / self.speed, prompt_eval_tokens=len(prompt),
            prompt_eval_ms=len(prompt), eval_tokens=GEN_TOKENS,
            eval_ms=1000 * GEN_TOKENS / self.speed, finish_reason="stop",
        )

    def complete(self, prompt, *, max_tokens, stop, params):
        return self._completion(prompt, params)

    def chat(self, messages, *, max_tokens, params):
        return self._completion(messages[-1]["content"], params)

    def batch(self, op, request, seeds):
        if not self.batches:
            return None
        prompt = request["prompt"] if op == "complete" else request["messages"][-1]["content"]
        _event("batch", self.name, len(seeds))
        done = [self._completion(prompt, {**request["params"], "seed": s}, event="sequence") for s in seeds]
        return SimpleNamespace(completions=done, wall_seconds=0.5, prompt_tokens=len(prompt),
                               generated_tokens=GEN_TOKENS * len(seeds), sequences=len(seeds))

    def close(self):
        _event("close", self.name)
        self.closed = True


def pytest_quantgate_load_model(config, variant, llama_kwargs):
    script = _script()
    _event("load", variant.name)
    if variant.name in script.get("skip_load", []):
        pytest.skip(f"{variant.name} is not served here")
    if variant.name in script.get("fail_load", []):
        raise ConnectionError(f"no server for {variant.name}")
    return FakeModel(variant.name, script)


def pytest_quantgate_summary(config, summary):
    with open(HERE / "summary_calls.txt", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"smallest_passing": summary.smallest_passing,
                             "by_group": summary.smallest_passing_by_group}) + "\\n")
'''

# A module of four echo cases under one module-level rubric; which variant misses which case
# is scripted in fake.json. Case ids: test_qa.py::test_echo[<variant>-<word>].
ECHO_CASES = """
import pytest
pytestmark = pytest.mark.quant_rubric({rubric})

@pytest.mark.parametrize("word", ["alpha", "beta", "gamma", "delta"])
def test_echo(quant_model, word):
    assert quant_model.generate(word) == word, f"expected {{word}}"
"""


def echo_cases(rubric: str = "accuracy=0.75") -> str:
    return ECHO_CASES.format(rubric=rubric)


class FakeProject:
    """A user's project in a pytester dir, run in process against the fake backend."""

    def __init__(self, pytester: pytest.Pytester, ladder: TinyLadder) -> None:
        self.pytester = pytester
        self.ladder = ladder
        self.path = pytester.path
        # The fake's answers follow fake.json, not the model file: a backend the result cache
        # cannot see change, so it is off unless a test turns it on.
        self.cache = False
        pytester.makeconftest(FAKE_CONFTEST)

    def config(self, variants: tuple[str, ...] | list[str] = ("F16", "Q8_0", "Q4_K_M", "Q2_K"), *,
               files: dict[str, Path] | None = None, **extra: Any) -> Path:
        """quantgate.yaml with those rungs of the tiny ladder (or ``files``: name -> path)."""
        data: dict[str, Any] = {
            "model": "tiny",
            "variants": {n: str(p) for n, p in (files or {n: self.ladder.files[n] for n in variants}).items()},
            "llama": {"n_ctx": 256, "n_threads": 1, "seed": 0},
        }
        data.update(extra)
        p = self.path / "quantgate.yaml"
        p.write_text(yaml.safe_dump(data, sort_keys=False))
        return p

    def script(self, *, wrong: dict[str, dict[str, str]] | None = None,
               speed: dict[str, float] | None = None, memory_mb: dict[str, float | None] | None = None,
               skip_load: list[str] | None = None,
               raise_on: dict[str, list[str]] | None = None,
               fail_load: list[str] | None = None,
               wrong_seeds: dict[str, dict[str, list[int]]] | None = None, batch: bool = True) -> None:
        """What the fake does: ``wrong={"Q2_K": {"gamma": "nope"}}`` makes Q2_K answer
        "nope" to the prompt "gamma" (everything else is echoed back, i.e. right);
        ``raise_on={"Q2_K": ["gamma"]}`` makes that call raise RuntimeError; ``speed`` is
        tok/s (default 100), ``memory_mb`` what the model reports (default 50, None: nothing);
        ``skip_load`` variants make the load hook call ``pytest.skip``, ``fail_load`` ones
        raise ConnectionError; ``wrong_seeds={"Q2_K": {"alpha": [1, 3]}}`` makes sampled calls
        (temperature > 0) of "alpha" with seed 1 or 3 miss; ``batch=False`` takes away the
        fake's batched decode of repeats."""
        (self.path / "fake.json").write_text(json.dumps({
            "wrong": wrong or {}, "speed": speed or {}, "memory_mb": memory_mb or {},
            "skip_load": skip_load or [], "raise": raise_on or {}, "fail_load": fail_load or [],
            "wrong_seeds": wrong_seeds or {}, "batch": batch,
        }))

    def args(self, *args: str) -> tuple[str, ...]:
        cache = () if self.cache else ("--quant-cache=off",)
        return ("-p", "no:randomly", "-o", f"cache_dir={self.path / '.qgcache'}", *cache, *args)

    def run(self, *args: str) -> pytest.RunResult:
        (self.path / "events.txt").unlink(missing_ok=True)
        return self.pytester.runpytest_inprocess(*self.args(*args))

    def run_subprocess(self, *args: str) -> pytest.RunResult:
        (self.path / "events.txt").unlink(missing_ok=True)
        return self.pytester.runpytest_subprocess(*self.args(*args))

    def run_report(self, *args: str, subprocess: bool = False) -> tuple[pytest.RunResult, dict[str, Any]]:
        report = self.path / "quantgate.json"
        report.unlink(missing_ok=True)
        run = self.run_subprocess if subprocess else self.run
        result = run(f"--quant-report={report}", *args)
        assert report.is_file(), result.stdout.str()
        return result, json.loads(report.read_text(), parse_constant=_not_json)

    def events(self) -> list[tuple[str, str]]:
        """(event, variant) in order: ("load", "F16"), ("call", "F16"), ("close", "F16"), ..."""
        path = self.path / "events.txt"
        if not path.is_file():
            return []
        return [(line.split()[0], line.split()[1]) for line in path.read_text().splitlines()]

    def event_pids(self) -> dict[str, set[str]]:
        """variant -> process ids that loaded, called or closed it."""
        out: dict[str, set[str]] = {}
        path = self.path / "events.txt"
        for line in path.read_text().splitlines():
            words = line.split()
            out.setdefault(words[1], set()).add(words[-1])
        return out

    def summary_calls(self) -> list[dict[str, Any]]:
        path = self.path / "summary_calls.txt"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _not_json(constant: str) -> Any:
    """Every report is checked to be strict JSON: json.loads accepts NaN and Infinity, but
    jq, JavaScript and most CI tools reject them."""
    raise AssertionError(f"the JSON report holds {constant}, which is not JSON")


STATUSES = ("PASSED", "FAILED", "XFAIL", "XPASS", "SKIPPED", "ERROR")


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def run_order(result: pytest.RunResult) -> list[tuple[str, str]]:
    """(node id, status) of each test line of a ``-v`` run, in run order."""
    out = []
    for line in result.outlines:
        words = line.split()
        if len(words) >= 2 and "::" in words[0] and words[1] in STATUSES:
            out.append((words[0], words[1]))
    return out
