"""User reducers (`Pipeline.reduce`): their accumulators of open windows, in Python.

A reducer folds records one by one, which the store's merge cannot do, so the owner of a
partition keeps each open window's accumulator here (it holds the claim, so nobody else
changes them) and writes it to the store with every batch, as a `set` component (JSON).
A claim loads them from the state; a batch folds into `pending` and the cache takes that
only once the store answered `ok`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from service.errors import RecordError
from service.processing.aggregates import Aggregation
from service.records import TP
from service.window_state import Component

# A user reducer's accumulator of one window: (key, start, end, component index).
Slot = tuple[str, int, int, int]
Span = tuple[int, int]


class Reducers:
    """The user reducers of an aggregate list, and their accumulators per partition.

    Args:
        aggregations: the window's aggregates (the reducers among them are folded here).
    """

    def __init__(self, aggregations: Sequence[Aggregation]) -> None:
        self.custom: list[tuple[Aggregation, int]] = []
        index = 0
        for agg in aggregations:
            if agg.custom is not None:
                self.custom.append((agg, index))
            index += len(agg.ops)
        self._accs: dict[TP, dict[Slot, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self.custom)

    def claimed(self, tp: TP, state: Mapping[tuple[str, int, int], list[Component]]) -> None:
        """Take the accumulators of `tp`'s open windows from the state a claim loaded."""
        accs: dict[Slot, Any] = {}
        for (key, start, end), comps in state.items():
            for _, index in self.custom:
                accs[(key, start, end, index)] = orjson.loads(str(comps[index]))
        self._accs[tp] = accs

    def revoke(self, tp: TP) -> None:
        """Forget a partition this worker no longer owns."""
        self._accs.pop(tp, None)

    def keep(self, tp: TP, accs: Mapping[Slot, Any], closed: Callable[[Slot], bool]) -> None:
        """Cache a batch's accumulators (the store took them); forget closed windows'."""
        cache = self._accs.setdefault(tp, {})
        cache.update(accs)
        for slot in [s for s in cache if closed(s)]:
            del cache[slot]

    def fold(
        self,
        tp: TP,
        key: str,
        spans: Sequence[Span],
        value: Any,
        comps: list[Component],
        pending: dict[Slot, Any],
    ) -> list[tuple[Span, list[Component]]]:
        """Fold one record into the accumulators of its windows (into `pending`).

        Raises:
            RecordError: a reducer raised (stage transform); `pending` is unchanged.
        """
        cache = self._accs.get(tp, {})
        new: dict[Slot, Any] = {}
        out = []
        for span in spans:
            span_comps = list(comps)
            for agg, index in self.custom:
                assert agg.custom is not None
                slot = (key, span[0], span[1], index)
                if slot in pending:
                    acc = pending[slot]
                elif slot in cache:
                    acc = cache[slot]
                else:
                    acc = agg.custom.initializer()
                try:
                    acc = agg.custom.reducer(acc, value)
                    span_comps[index] = orjson.dumps(acc).decode()
                except Exception as exc:
                    raise RecordError("transform", f"reducer {agg.name}: {exc}") from exc
                new[slot] = acc
            out.append((span, span_comps))
        pending.update(new)
        return out
