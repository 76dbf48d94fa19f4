"""Exactly-once bookkeeping: which outbox entries Kafka has, per input partition.

Every transaction commits the input offsets with, as offset metadata, the window outbox
sequence it delivered. Kafka itself then tells a new owner which outbox entries are out
already, including those of idle-partition watermark advances, which no input offset
marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from service.kafka.producer import OffsetMeta
from service.records import TP

SEQ_META = "rill-outbox-seq="


def seq_meta(seq: int) -> str:
    """Offset metadata naming the window outbox sequence a transaction delivered."""
    return f"{SEQ_META}{seq}"


def outbox_seq(meta: str) -> int:
    """The outbox sequence in committed offset metadata (0 when absent)."""
    if meta.startswith(SEQ_META):
        try:
            return int(meta[len(SEQ_META) :])
        except ValueError:
            return 0
    return 0


@dataclass(slots=True)
class Ledger:
    """Per partition: the committed input offset and the delivered outbox sequence."""

    positions: dict[TP, int] = field(default_factory=dict)
    delivered: dict[TP, int] = field(default_factory=dict)

    def claimed(self, tp: TP, committed: int, meta: str) -> int:
        """A partition assigned with this committed offset; returns its delivered sequence."""
        delivered = outbox_seq(meta)
        self.positions[tp] = committed
        self.delivered[tp] = delivered
        return delivered

    def offsets(self, next_offsets: dict[TP, int], seqs: dict[TP, int]) -> dict[TP, OffsetMeta]:
        """Input offsets to commit with a transaction, each with its outbox sequence."""
        out = {
            tp: (offset, seq_meta(seqs.get(tp, self.delivered.get(tp, 0))))
            for tp, offset in next_offsets.items()
        }
        for tp, seq in seqs.items():
            if tp not in out and self.positions.get(tp, -1) >= 0:
                out[tp] = (self.positions[tp], seq_meta(seq))
        return out

    def committed(self, offsets: dict[TP, OffsetMeta], seqs: dict[TP, int]) -> None:
        """A transaction with these offsets, delivering outbox entries up to `seqs`, committed."""
        for tp, (offset, meta) in offsets.items():
            self.positions[tp] = offset
            self.delivered[tp] = outbox_seq(meta)
        self.delivered.update(seqs)

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked."""
        for tp in tps:
            self.positions.pop(tp, None)
            self.delivered.pop(tp, None)
