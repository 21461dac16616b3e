"""A synthetic JSON report for the HTML report's tests, shaped like ``report_dict``'s output
(with per-case transcripts and flips): three variants, two groups, a reply that holds markup,
an accuracy that is an upper bound (decided early), fidelity and speed-probe figures; and
``Elements``, which reads a page (or a browser's DOM dump) back as tags and case texts."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from typing import Any

VARIANTS = {"Q2_K": 88.2, "Q4_K_M": 105.5, "F16": 270.9}  # name -> disk MB, smallest first
GROUPS = ("test_facts.py", "test_math.py")
CASES = {"test_facts.py": ("test_facts.py::test_fact", ["capital-france", "capital-peru", "moon"]),
         "test_math.py": ("test_math.py::test_add", ["one-plus-one", "two-plus-two"])}
# (variant, case) -> outcome; everything else passes
MISSES = {("Q2_K", "capital-peru"), ("Q2_K", "moon"), ("Q2_K", "one-plus-one"),
          ("Q2_K", "two-plus-two"), ("Q4_K_M", "moon")}
EVIL = "<script>alert('pwned')</script>"  # what Q2_K answers to the moon question


def _call(prompt: str, reply: str, cached: bool = False) -> dict[str, Any]:
    return {"op": "chat", "prompt": f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
            "reply": reply, "prompt_tokens": 21, "completion_tokens": 7, "wall_seconds": 0.12,
            "finish_reason": "stop", "cached": cached}


def _case(variant: str, group: str, param: str) -> dict[str, Any]:
    head, _ = CASES[group]
    miss = (variant, param) in MISSES
    if param == "moon" and variant == "Q2_K":
        reply = EVIL
    else:
        reply = f"{'wrong' if miss else 'right'} answer to {param} from {variant}"
    return {"nodeid": f"{head}[{variant}-{param}]", "key": f"{head}[{param}]", "group": group,
            "outcome": "miss" if miss else "passed",
            "message": f"assert 'expected' in {reply!r}" if miss else "",
            "calls": [_call(f"question {param}?", reply, cached=variant == "Q4_K_M")]}


def sample_report() -> dict[str, Any]:
    reference = "F16"
    rows = []
    for name, size in VARIANTS.items():
        cases = [_case(name, g, p) for g in GROUPS for p in CASES[g][1]]
        groups = {}
        for g in GROUPS:
            mine = [c for c in cases if c["group"] == g]
            passed = sum(c["outcome"] == "passed" for c in mine)
            acc = passed / len(mine)
            ref_outcomes = {c["key"]: c["outcome"] for c in (_case(reference, g, p) for p in CASES[g][1])}
            flips = [{"key": c["key"], "against": "reference", "was": ref_outcomes[c["key"]], "now": c["outcome"]}
                     for c in mine if name != reference and c["outcome"] != ref_outcomes[c["key"]]]
            threshold = 0.6 if g == "test_facts.py" else 0.9
            groups[g] = {
                "group": g, "variant": name, "thresholds": {"accuracy": threshold}, "accuracy_bound": "point",
                "cases": len(mine), "passed_cases": passed, "misses": len(mine) - passed, "failures": 0,
                "accuracy": acc, "accuracy_ci": [max(acc - 0.3, 0.0), min(acc + 0.2, 1.0)],
                "tokens_per_second": 50.0, "prompt_tokens_per_second": 400.0, "memory_mb": 200.0,
                "disk_mb": size, "load_seconds": 0.2, "baseline": None, "vs_reference": None,
                "fidelity": {"reference": reference, "positions": 500, "mean_kld": 0.05, "p99_kld": 0.9,
                             "top1_agreement": 0.91, "perplexity_ratio": 1.04} if name != reference else None,
                "reasons": [] if acc >= threshold else [f"accuracy {acc:.2f} < {threshold:.2f}"],
                "no_verdict": False, "undecided": 0, "passed": acc >= threshold,
                "case_outcomes": {c["nodeid"]: c["outcome"] for c in mine}, "flips": flips,
            }
        if name == "Q2_K":  # decided early on math: accuracy is only an upper bound
            groups["test_math.py"]["undecided"] = 1
        reasons = [f"{g}: {r}" for g, gr in groups.items() for r in gr["reasons"]]
        probe = {"repeats": 5, **{k: {"median": v, "min": v * 0.9, "max": v * 1.05, "spread": 0.15}
                                  for k, v in (("tokens_per_second", 90.0), ("decode_tokens_per_second", 120.0),
                                               ("prompt_tokens_per_second", 500.0))}}
        rows.append({
            "name": name, "file_type": name, "path": f"/models/{name.lower()}.gguf", "sha256": "0" * 64,
            "size_bytes": int(size * 1e6), "size_mb": size, "loads": 1, "load_seconds": 0.2,
            "memory_mb": 150.0 + size / 2, "tokens_per_second": 90.0, "decode_tokens_per_second": 120.0,
            "prompt_tokens_per_second": 500.0, "groups": groups, "failed_tests": [], "passed": not reasons,
            "reasons": reasons, "probe": probe, "live_calls": 5, "cached_calls": 0, "cases": cases,
            "fidelity": {"reference": reference, "positions": 1000, "mean_kld": 0.06, "p99_kld": 1.1,
                         "top1_agreement": 0.9, "perplexity_ratio": 1.05} if name != reference else None,
        })
    passing = [r["name"] for r in rows if r["passed"]]
    return {
        "schema": 1, "quantgate": "0.1.0", "model": "tiny", "config": "/p/quantgate.yaml",
        "reference": reference, "smallest_passing": passing[0] if passing else None,
        "smallest_passing_by_group": {g: next((r["name"] for r in rows if r["groups"][g]["passed"]), None)
                                      for g in GROUPS},
        "gate": "all", "incomplete": False,
        "environment": {"llama_cpp_python": "0.3.36", "cpu": "Test CPU", "cpu_count": 2, "threads": 2,
                        "python": "3.11.7"},
        "baseline": {"note": None, "changes": []}, "groups": list(GROUPS),
        "group_labels": {g: g for g in GROUPS}, "variants": rows,
    }


def without(report: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A copy with those per-row and per-group keys removed, like an older report."""
    out = copy.deepcopy(report)
    for row in out["variants"]:
        for k in keys:
            row.pop(k, None)
            for g in row["groups"].values():
                g.pop(k, None)
    return out


class Elements(HTMLParser):
    """Every start tag as (tag, attributes), and the text inside each ``details.case``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.case_text: list[str] = []
        self._depth = 0  # inside a case's <details>
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "details" and "case" in a.get("class", "").split():
            self._depth = 1
            self.case_text.append("")
        elif tag == "details" and self._depth:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details" and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.case_text[-1] += data

    def find(self, tag: str, cls: str | None = None, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split())
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]
