"""Collection: which tests form eval groups, the verdict test each (group, variant) gets, the
order tests run in (one block per variant: one load, one resident model), and keeping a
variant's tests and verdicts on one xdist worker."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

import pytest

from .constants import MARKER, PARAM, VERDICT_PROP
from .display import show
from .records import CaseRecord, Verdict, case_key
from .repeats import REPEAT_FIXTURE, repeat_id, without_repeat
from .rubric import RELATIVE_KEYS, Rubric, RubricError, parse_rubric

FLAT_FIGURES = ("accuracy", "tokens_per_second", "memory_mb", "disk_mb", "load_seconds")


@dataclass(frozen=True)
class Group:
    key: str  # nodeid-like: the module, class or function the quant_rubric marker sits on
    rubric: Rubric


Judge = Callable[[Group, str], Verdict]


class RubricItem(pytest.Item):
    """The verdict test for one (eval group, variant): runs after the group's cases and only
    reads what they recorded (``judge``)."""

    def __init__(self, *, group: Group, variant: str, judge: Judge, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.variant = variant
        self._judge = judge

    def runtest(self) -> None:
        __tracebackhide__ = True
        verdict = self._judge(self.group, self.variant)
        self.user_properties.append((VERDICT_PROP, verdict.to_dict()))
        for key in FLAT_FIGURES:  # flat figures for JUnit XML dashboards
            value = getattr(verdict, key)
            if value is not None:
                self.user_properties.append((f"quantgate.{key}", round(value, 4)))
        if verdict.reasons:
            pytest.fail("\n".join(verdict.reasons), pytrace=False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Like Function.reportinfo: the part of the id below the module, dotted.
        module_id = self.nodeid.split("::", 1)
        return self.path, None, (module_id[1] if len(module_id) > 1 else self.name).replace("::", ".")


def repeat_of(item: pytest.Item) -> int | None:
    """The repeat an item runs (``quant_rubric(repeats=N)``), None when its case is not repeated."""
    callspec = getattr(item, "callspec", None)
    r = callspec.params.get(REPEAT_FIXTURE) if callspec is not None else None
    return int(r) if r is not None else None


def parametrize_repeats(metafunc: pytest.Metafunc, defaults: Rubric) -> None:
    """``quant_rubric(repeats=N)``: the function's cases become N items each, one per repeat,
    next to each other (``test_x[Q4_K_M-case-rep0]`` ... ``-rep7]``): called after every other
    parametrization, so the repeat is the innermost parameter and the last part of the id."""
    n = defaults.n_repeats
    for mark in metafunc.definition.iter_markers(MARKER):  # closest first
        if "repeats" in mark.kwargs:
            try:
                n = parse_rubric({"repeats": mark.kwargs["repeats"]}).n_repeats
            except RubricError:
                n = 1  # reported with the item's node id when its group is formed
            break
    if n > 1:
        metafunc.parametrize(REPEAT_FIXTURE, range(n), ids=[repeat_id(r) for r in range(n)], indirect=True)


def variant_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and PARAM in callspec.params:
        return str(callspec.params[PARAM])
    if isinstance(item, RubricItem):
        return item.variant
    return None


class Groups:
    """The eval groups found at collection, each with its merged rubric."""

    def __init__(self, defaults: Rubric, isolation: str) -> None:
        self.defaults = defaults
        self.isolation = isolation
        self.by_key: dict[str, Group] = {}

    def of(self, item: pytest.Item) -> Group | None:
        marks = list(item.iter_markers_with_node(MARKER))
        if not marks:
            return None
        node, _ = marks[0]
        if node is item:  # marker on the function: group = the function across its params
            key = f"{item.parent.nodeid}::{getattr(item, 'originalname', item.name)}" if item.parent else item.nodeid
        else:
            key = node.nodeid
        if key in self.by_key:
            return self.by_key[key]
        rubric = self.defaults
        for _node, mark in reversed(marks):  # farthest first, so closer markers override
            if mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: {MARKER}: takes keyword arguments only, got {show(mark.args)}"
                )
            try:
                rubric = rubric.merged(parse_rubric(mark.kwargs))
            except RubricError as exc:
                raise pytest.UsageError(f"{item.nodeid}: {MARKER}: {exc}") from None
        if rubric.needs_fidelity and self.isolation == "process":
            raise pytest.UsageError(
                f"{item.nodeid}: {MARKER}: max_kld/min_top1_agreement/max_perplexity_ratio need the "
                "model in the test process, but isolation is process; use --quant-isolation=none"
            )
        group = Group(key, rubric)
        self.by_key[key] = group
        return group

    @property
    def need_reference(self) -> bool:
        return any(g.rubric.needs_fidelity or g.rubric.max_drop_vs_reference is not None
                   or any(getattr(g.rubric, k) is not None for k in RELATIVE_KEYS)
                   for g in self.by_key.values())


@dataclass
class Arranged:
    """What collection decided: each case's group, and each (group, variant)'s last case."""

    item_group: dict[str, str]  # case nodeid -> group key
    last_case: dict[tuple[str, str], str]  # (group, variant) -> nodeid of its last case


def arrange(config: pytest.Config, items: list[pytest.Item], selected: tuple[str, ...],
            groups: Groups, judge: Judge) -> Arranged:
    """Reorder ``items`` in place and insert the verdict tests."""
    order = {name: i for i, name in enumerate(selected)}
    # Stable sort: tests without a variant first, then one block per variant in run order,
    # each block in collection order. One block = one load = one resident model.
    items.sort(key=lambda it: order.get(variant_of(it) or "", -1))
    out: list[pytest.Item] = []
    grouped: list[tuple[pytest.Item, str]] = []
    last_index: dict[tuple[str, str], int] = {}
    last_item: dict[tuple[str, str], pytest.Item] = {}
    for item in items:
        variant = variant_of(item)
        group = groups.of(item) if variant is not None else None
        out.append(item)
        if variant is not None and group is not None:
            grouped.append((item, group.key))
            last_index[(group.key, variant)] = len(out) - 1
            last_item[(group.key, variant)] = item
    # Verdict items are made here, after pytest's own --deselect ran: apply it to them too.
    deselect = tuple(config.getoption("deselect", None) or ())
    for (gkey, variant), idx in sorted(last_index.items(), key=lambda kv: kv[1], reverse=True):
        verdict = _verdict_item(last_item[(gkey, variant)], groups.by_key[gkey], variant, judge)
        if deselect and verdict.nodeid.startswith(deselect):
            config.hook.pytest_deselected(items=[verdict])
            continue
        out.insert(idx + 1, verdict)
    items[:] = out
    if config.pluginmanager.hasplugin("xdist"):
        _keep_variants_together(config, items, groups.need_reference)
    return Arranged(item_group={item.nodeid: key for item, key in grouped},  # final node ids
                    last_case={pair: item.nodeid for pair, item in last_item.items()})


def _verdict_item(case: pytest.Item, group: Group, variant: str, judge: Judge) -> RubricItem:
    node = next(iter(case.iter_markers_with_node(MARKER)))[0]
    parent: Any  # Node | None or Collector | None, depending on the pytest release
    if node is case:  # function-level group: sit beside the function, named after it
        parent = case.parent
        name = f"{getattr(case, 'originalname', case.name)}::{MARKER}[{variant}]"
    else:
        parent = node
        name = f"{MARKER}[{variant}]"
    assert isinstance(parent, pytest.Collector)
    return RubricItem.from_parent(parent, name=name, group=group, variant=variant, judge=judge)


def _keep_variants_together(config: pytest.Config, items: list[pytest.Item], need_reference: bool) -> None:
    """Under ``pytest -n``, a variant's cases and its verdicts must share one worker: the
    verdict reads the cases' outcomes and the model is loaded once per worker. Gates that
    compare to the reference need its results in the same process, so then all variants
    share one worker (correct, not parallel)."""
    grouped = getattr(config, "workerinput", {}).get("quantgate_loadgroup")
    for item in items:
        variant = variant_of(item)
        if variant is None:
            continue
        xgroup = "quantgate" if need_reference else variant
        item.add_marker(pytest.mark.xdist_group(name=xgroup))
        if grouped and not item.nodeid.endswith("@" + xgroup):
            # xdist turns marks into "@group" node id suffixes in a hook that ran before this
            # trylast one (which must follow -k); apply the same rule.
            _set_nodeid(item, f"{item.nodeid}@{xgroup}")


def _set_nodeid(item: pytest.Item, nodeid: str) -> None:
    """Rename a collected item, as xdist's loadgroup does. pytest 9 keeps ids as a structured
    ``NodeId`` whose type moves between releases, so it is reached without static types."""
    target: Any = item
    if hasattr(item, "_id"):
        node_id: Any = importlib.import_module("_pytest.nodeid").NodeId
        path, _, rest = nodeid.partition("::")
        # The whole tail as names, no params: str() gives back exactly `nodeid`.
        target._id = node_id(path=path, names=tuple(rest.split("::")), params=None)
    else:  # pytest < 9
        target._nodeid = nodeid


def misses_first(item: pytest.Item, position: dict[str, int], cases: Iterable[CaseRecord],
                 arranged: Arranged) -> None:
    """``--quant-decide-early``: at the first case of a run of cases sharing a parent and a
    variant, move the cases that missed on the variants already run (the bigger rungs) to the
    front of the run, so a failing group reaches its deciding miss after a few cases instead
    of near the end. Case order never changes a verdict. Only items after the running one
    move, and only within one parent, so pytest's fixture setup and teardown see the same
    structure; ``position`` (nodeid -> index) and each group's last case follow the new order.
    """
    items = item.session.items
    i = position.get(item.nodeid)
    variant = variant_of(item)
    if i is None or variant is None or i >= len(items) or items[i] is not item:
        return

    def same_run(other: pytest.Item) -> bool:
        return other.parent is item.parent and variant_of(other) == variant and not isinstance(other, RubricItem)

    if i > 0 and same_run(items[i - 1]):
        return  # not the run's first case: the run was ordered when it began
    end = i + 1
    while end < len(items) and same_run(items[end]):
        end += 1
    missed: dict[str, int] = {}
    for c in cases:
        if c.variant != variant and c.outcome not in ("passed", "skipped"):
            key = case_key(without_repeat(c.nodeid, c.repeat), c.variant)
            missed[key] = missed.get(key, 0) + 1
    # A case's repeats share one key, so the stable sort keeps them together; the running
    # item's own later repeats stay right after it (its batch answers them).
    running = without_repeat(item.nodeid, repeat_of(item))

    def order(it: pytest.Item) -> tuple[bool, int]:
        case = without_repeat(it.nodeid, repeat_of(it))
        return case != running, -missed.get(case_key(case, variant), 0)

    tail = sorted(items[i + 1:end], key=order)
    items[i + 1:end] = tail
    for k in range(i + 1, end):
        position[items[k].nodeid] = k
    for group in {arranged.item_group.get(it.nodeid) for it in tail} - {None}:
        last = max((it for it in items[i:end] if arranged.item_group.get(it.nodeid) == group),
                   key=lambda it: position[it.nodeid])
        pair = (str(group), variant)
        if position[last.nodeid] > position.get(arranged.last_case.get(pair, ""), -1):
            arranged.last_case[pair] = last.nodeid
