"""What a run records, as plain typed data: each case's outcome and each (group, variant)'s
verdict. Both travel on test reports (``user_properties``) as dicts, so under ``pytest -n``
the controller rebuilds exactly what the workers recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

OUTCOMES = ("passed", "miss", "failed", "error", "skipped")


@dataclass(frozen=True)
class CaseRecord:
    nodeid: str
    variant: str
    group: str | None
    outcome: str  # one of OUTCOMES
    message: str = ""  # the miss's assertion, the failure's last line, the skip's reason
    calls: tuple[dict[str, Any], ...] = ()  # each model call's transcript (model.transcript)
    repeat: int | None = None  # which repeat of its case this item ran (rubric repeats > 1)
    pass_rate: float = 1.0  # with a repeat: the share of its case's repeats that must pass
    n_repeats: int = 1  # with a repeat: how many repeats its case has
    repeats: tuple[str, ...] = ()  # a case judged over repeats: each repeat's outcome, in order

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"nodeid": self.nodeid, "key": case_key(self.nodeid, self.variant), "group": self.group,
             "outcome": self.outcome, "message": self.message, "calls": list(self.calls)}
        if self.repeats:
            ran = [o for o in self.repeats if o != "skipped"]
            d["repeats"] = {"passed": ran.count("passed"), "ran": len(ran), "outcomes": list(self.repeats)}
        return d


@dataclass
class Verdict:
    """The judgement of one (eval group, variant): figures, comparisons and the reasons it
    fails. Built in one place (``judge.judge``); ``passed`` is set from the verdict test's
    own outcome, so a verdict that could not be judged is never a pass."""

    group: str
    variant: str
    thresholds: dict[str, float] = field(default_factory=dict)
    accuracy_bound: str = "point"  # how accuracy was judged: lower, point or upper
    cases: int = 0  # cases that ran (skipped ones excluded)
    passed_cases: int = 0
    misses: int = 0
    failures: int = 0
    accuracy: float | None = None
    accuracy_ci: list[float] | None = None  # 95% Wilson interval
    tokens_per_second: float | None = None
    prompt_tokens_per_second: float | None = None
    memory_mb: float | None = None
    disk_mb: float | None = None
    load_seconds: float | None = None
    baseline: dict[str, Any] | None = None  # GroupComparison.to_dict()
    vs_reference: dict[str, Any] | None = None  # PairedComparison.to_dict() + reference name
    fidelity: dict[str, Any] | None = None  # mean/p99 KLD, top-1 agreement, perplexity ratio
    reasons: list[str] = field(default_factory=list)
    no_verdict: bool = False  # no case was evaluated: nothing to judge, so never a pass
    undecided: int = 0  # cases --quant-decide-early did not run; accuracy is then an upper bound
    repeats: dict[str, Any] | None = None  # sampled repeats: repeats.repeat_figures()
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def no_evidence(cases: list[CaseRecord], noun: str, where: str = "") -> str | None:
    """Why there is nothing to judge when no case ran (all skipped): no evidence is not a pass."""
    if any(c.outcome != "skipped" for c in cases):
        return None
    why = next((c.message for c in cases if c.message), "")
    return (f"no verdict: none of its {len(cases)} {noun} was evaluated{where}, all skipped"
            + (f": {why}" if why else ""))


def case_label(key: str) -> str:
    """``test_qa.py::test_fact[capital-peru]`` -> ``capital-peru``: short enough for one line."""
    if key.endswith("]") and "[" in key:
        return key[key.index("[") + 1 : -1]
    return key.rsplit("::", 1)[-1]


def case_key(nodeid: str, variant: str) -> str:
    """The node id without the variant, so a case matches across variants and runs.

    ``test_qa.py::test_fact[Q4_K_M-capital]`` -> ``test_qa.py::test_fact[capital]``. pytest
    escapes non-ASCII ids (``Ü4`` shows as ``\\xdc4``), so both spellings are recognised.
    """
    escaped = variant.encode("unicode_escape").decode("ascii")
    forms = [variant] if escaped == variant else [variant, escaped]
    for form in forms:
        for suffix in (f"@{form}", "@quantgate"):  # xdist loadgroup suffixes we add
            if nodeid.endswith(suffix):
                nodeid = nodeid[: -len(suffix)]
    if not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid
    head, _, params = nodeid[:-1].partition("[")
    for form in forms:
        if params == form:
            return head
        if params.startswith(form + "-"):
            return f"{head}[{params[len(form) + 1:]}]"
        if params.endswith("-" + form):
            return f"{head}[{params[: -len(form) - 1]}]"
        if f"-{form}-" in params:
            return f"{head}[{params.replace(f'-{form}-', '-', 1)}]"
    return f"{head}[{params}]"
