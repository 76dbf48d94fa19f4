"""Count windows: windows of N records of a key, counted in the partition's offset order.

A key's records, in the order of their offsets in the input partition, are numbered
0, 1, 2, ...; window j holds records `j*step .. j*step + count - 1` (tumbling: `step` is
`count`; hopping: `count_advance`). Membership depends on that order only, never on time,
so a window is the same on every replay.

Ids. A window's id in the store is `<first offset>|<first item>|<key>`: the input offset
of its first record and, for a record a `flat_map` turned into several items, that item's
position among the record's items (0 otherwise). Both are fixed when the window opens and
unique per key, so the id never changes while the window fills. Its output is
`window_start` = the first offset and `window_end` = the last offset + 1.

Counting. Every count window stores two components after the user's (`HIDDEN`): the
offset of its last record (`max`) and its record count (`add`, the last component).
`apply.lua` closes a count window in the apply that brings that count to N (and never by
time: a partial window stays open until more records of its key come). This worker owns
the partition while it holds the claim, so the open windows of each key are read once,
at the claim (`from_state`), and followed here batch by batch: the aggregator needs them
to know which windows a record joins and when a new one opens. Nothing else per key is
kept: a key whose windows all closed has no state, and its next record opens a window.

Everything here is a plain value: a batch works on a copy (`Pending`), which the
aggregator keeps only when the store answered `ok`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from service.processing.aggregates import Aggregation
from service.window_state import Component

LAST_OFFSET: Final = "_rill_last_offset"
RECORDS: Final = "_rill_records"
# Kept after the user's components by every count window; the count comes last
# (apply.lua reads it there).
HIDDEN: Final = (Aggregation("offset", None, LAST_OFFSET), Aggregation("count", None, RECORDS))


class OpenWindow(NamedTuple):
    """A count window that has not reached its count yet."""

    start: int  # the input offset of its first record
    item: int  # the item of that record it started with (flat_map), else 0
    records: int


# One key's open windows, oldest first.
KeyWindows = tuple[OpenWindow, ...]


def join(
    windows: KeyWindows, offset: int, item: int, count: int, step: int
) -> tuple[list[tuple[int, int]], KeyWindows]:
    """The windows a key's next record joins, and the key's open windows after it.

    A new window opens when the key has none open or its newest one holds `step` records;
    a window that reaches `count` records is full (closed by the store in this apply).

    Args:
        windows: the key's open windows before the record.
        offset: the record's input offset.
        item: the position of this item among its record's items.
        count: records per window.
        step: records between the starts of two windows (<= count).

    Returns:
        ((start, item) of each window the record joins, the key's open windows after it).
    """
    if not windows or windows[-1].records >= step:
        windows = (*windows, OpenWindow(offset, item, 0))
    spans = [(w.start, w.item) for w in windows]
    after = tuple(
        OpenWindow(w.start, w.item, w.records + 1) for w in windows if w.records + 1 < count
    )
    return spans, after


def from_state(
    state: Mapping[tuple[str, int, int], list[Component]], count: int
) -> dict[str, KeyWindows]:
    """The open windows of each key, from the state a claim loaded (id -> components)."""
    found: dict[str, list[OpenWindow]] = {}
    for (key, start, item), comps in state.items():
        records = int(comps[-1])
        if records < count:
            found.setdefault(key, []).append(OpenWindow(start, item, records))
    return {key: tuple(sorted(ws)) for key, ws in found.items()}


@dataclass(slots=True)
class Pending:
    """A batch's view of one partition's open count windows: the owner's, plus its changes.

    Args:
        owned: the open windows as the store has them (not changed here).
    """

    owned: Mapping[str, KeyWindows]
    changed: dict[str, KeyWindows] = field(default_factory=dict)
    last: tuple[int, int] = (-1, 0)  # (offset, items of it seen) of the latest record

    def item_of(self, offset: int) -> int:
        """The position of the next item of record `offset` among its items that reach
        the window (0 for a record's first)."""
        seen_offset, items = self.last
        position = items if seen_offset == offset else 0
        self.last = (offset, position + 1)
        return position

    def windows(self, key: str) -> KeyWindows:
        """The key's open windows as this batch left them so far."""
        found = self.changed.get(key)
        return found if found is not None else self.owned.get(key, ())

    def assign(
        self, key: str, offset: int, count: int, step: int
    ) -> tuple[list[tuple[int, int]], KeyWindows]:
        """The (start, item) ids of the windows the next item of `key` joins, and the
        key's open windows after it (`keep` them once the item is windowed)."""
        return join(self.windows(key), offset, self.item_of(offset), count, step)

    def keep(self, key: str, windows: KeyWindows) -> None:
        """The key's open windows after one more record."""
        self.changed[key] = windows


def settled(owned: dict[str, KeyWindows], changes: Mapping[str, KeyWindows]) -> None:
    """Take a batch's changes into the owner's open windows (the store answered `ok`)."""
    for key, windows in changes.items():
        if windows:
            owned[key] = windows
        else:
            owned.pop(key, None)


def open_slots(owned: Mapping[str, KeyWindows]) -> Iterable[tuple[str, int, int]]:
    """(key, start, item) of every open window."""
    for key, windows in owned.items():
        for w in windows:
            yield key, w.start, w.item
