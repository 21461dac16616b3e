"""``--quant-decide-early``: stop running a (group, variant)'s cases once its verdict is a
fail whatever the rest do. The run state it needs (how many cases each pair has, where each
item stands) lives here; the decision itself is ``judge.decided_early``, pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from .collection import Arranged, Groups, RubricItem, misses_first, variant_of
from .constants import DECIDED_PREFIX
from .judge import decided_early
from .records import CaseRecord


class EarlyDecisions:
    def __init__(self, reference: str | None, reorder: bool) -> None:
        self.reference = reference  # never decided early: other verdicts compare with its outcomes
        self.reorder = reorder  # misses first; off under xdist, whose workers run items by index
        self.totals: dict[tuple[str, str], int] = {}  # (group, variant) -> cases collected
        self.position: dict[str, int] = {}  # nodeid -> index in session.items

    def collected(self, items: list[pytest.Item], arranged: Arranged) -> None:
        self.position = {it.nodeid: i for i, it in enumerate(items)}
        self.totals = {}
        for it in items:
            group, variant = arranged.item_group.get(it.nodeid), variant_of(it)
            if group is not None and variant is not None and not isinstance(it, RubricItem):
                self.totals[(group, variant)] = self.totals.get((group, variant), 0) + 1

    def before(self, item: pytest.Item, arranged: Arranged, groups: Groups, cases: Iterable[CaseRecord],
               refused: Callable[[str], str | None]) -> str | None:
        """Why ``item`` need not run (its verdict is already a fail), or None. At the first case
        of a run, the cases that missed on bigger rungs are moved to the front first."""
        cases = list(cases)
        if self.reorder:
            misses_first(item, self.position, cases, arranged)
        variant, group = variant_of(item), arranged.item_group.get(item.nodeid)
        if variant is None or group is None or variant == self.reference:
            return None
        why = refused(variant)  # preflight refused the file, or it could not be loaded
        if why is not None:
            return DECIDED_PREFIX + why
        mine = [c for c in cases if c.group == group and c.variant == variant]
        return decided_early(groups.by_key[group].rubric, mine, self.totals.get((group, variant), 0))
