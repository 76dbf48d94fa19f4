"""Exactly-once bookkeeping: which outbox entries Kafka has, per input partition.

Every transaction commits the input offsets with, as offset metadata, the window outbox
sequence it delivered. Kafka itself then tells a new owner which outbox entries are out
already, including those of idle-partition watermark advances, which no input offset
marks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from service.kafka.consumer import GroupConsumer
from service.kafka.producer import BatchProducer
from service.processing.batch import Plan, encode_results
from service.runtime.windowing import WindowEngine
from service.state.redis_store import TP

log = structlog.get_logger("rill.exactly_once")
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

    def offsets(
        self, next_offsets: dict[TP, int], seqs: dict[TP, int]
    ) -> dict[TP, tuple[int, str]]:
        """Input offsets to commit with a transaction, each with its outbox sequence."""
        out = {
            tp: (offset, seq_meta(seqs.get(tp, self.delivered.get(tp, 0))))
            for tp, offset in next_offsets.items()
        }
        for tp, seq in seqs.items():
            if tp not in out and self.positions.get(tp, -1) >= 0:
                out[tp] = (self.positions[tp], seq_meta(seq))
        return out

    def committed(self, offsets: dict[TP, tuple[int, str]], seqs: dict[TP, int]) -> None:
        """A transaction with these offsets, delivering outbox entries up to `seqs`, committed."""
        for tp, (offset, meta) in offsets.items():
            self.positions[tp] = offset
            self.delivered[tp] = outbox_seq(meta)
        self.delivered.update(seqs)

    def forget(self, tps: list[TP]) -> None:
        """Partitions revoked."""
        for tp in tps:
            self.positions.pop(tp, None)
            self.delivered.pop(tp, None)


def reconcile(
    tp: TP,
    now: int,
    *,
    engine: WindowEngine,
    producer: BatchProducer,
    consumer: GroupConsumer,
    plan: Plan,
    ledger: Ledger,
    timeout_s: float,
) -> None:
    """Claim `tp` and re-emit exactly the outbox entries no committed transaction delivered.

    They go out with the partition's offset (past the applied records) in one transaction.
    """
    committed, meta = consumer.committed([tp])[tp]
    delivered = outbox_seq(meta)
    results, late, seq = engine.assign(tp, now, after_seq=delivered)
    ledger.positions[tp] = committed
    ledger.delivered[tp] = max(delivered, 0)
    if results or late:
        outputs, dlq = encode_results(results, plan, now)
        offsets = {tp: (max(committed, engine.owned[tp].applied + 1), seq_meta(seq))}
        producer.transaction([*outputs, *dlq, *late], offsets, consumer.group_metadata(), timeout_s)
        ledger.committed(offsets, {tp: seq})
        log.info(
            "outbox re-emitted in a transaction",
            topic=tp[0],
            partition=tp[1],
            results=len(results),
            dlq=len(dlq) + len(late),
            offset=offsets[tp][0],
        )
    if seq:
        engine.acknowledge(tp, seq)
        engine.flush_acks([tp])
